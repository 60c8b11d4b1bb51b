"""FedMAP on Flower (flwr 1.42, the Message API): a Strategy and a ClientApp over our Algorithm.

The ClientApp's train step is a site's local MAP step, ``Algorithm.local_update``: from its own
theta_k it minimises (1/N_k) sum_i l(y_i, phi(x_i; theta)) - log rho_gamma(theta) (eq. 7) and
replies with theta_k, log omega_k = -mean NLL(theta_k) - R(theta_k) / N_k (eq. 8) and N_k. The
Strategy's server step is ``Algorithm.aggregate``: for FedMAP mu = sum_k w_k theta_k with
w = softmax(log omega) (eq. 9), not N_k / N, plus a learned prior's ``prior/...`` state, fitted with
the same w_k. The whole broadcast prior (mu and its ``prior/...`` entries) travels as one
ArrayRecord of arrays (``np.save`` with ``allow_pickle=False``), never a pickle.

A node keeps theta_k and its shuffling generator in ``Context.state``, which Flower holds per node
across the rounds of a run, so a Flower run repeats ``fedmap.simulator.simulate`` to rounding.
This module is the only one in ``fedmap`` that imports flwr (the ``flower`` extra).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from flwr.simulation import run_simulation
from flwr.supercore import log

from fedmap.algorithms import Algorithm, SiteContext, SiteUpdate
from fedmap.data import SiteData, standardise
from fedmap.initialisation import initialise
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.simulator import SimulationConfig, evaluate, site_generator
from fedmap.synthetic import generate

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"  # Flower's own FedAvg keys
EXAMPLES, LOG_OMEGA, ROUND = "num-examples", "log-omega", "server-round"
PERSONAL, GENERATOR = "fedmap.personal", "fedmap.generator"  # Context.state: stays on the node

SiteSource = Callable[[int], SiteData]
"""A node's data from its partition id, called on the node (so data never crosses)."""


def to_record(params: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Tensors as Flower arrays, in order (the input layer first, as ``aggregate`` needs)."""
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in params.items()})


def from_record(record: ArrayRecord) -> Params:
    """The tensors back, in the record's order (a JSON list of names when Flower ships it)."""
    return {k: torch.from_numpy(a.numpy()) for k, a in record.items()}


@dataclass(frozen=True)
class SyntheticSites:
    """``fedmap.synthetic.generate`` sites, built once per node process rather than shipped."""

    scenario: str
    seed: int
    num_sites: int

    def __call__(self, index: int) -> SiteData:
        return _synthetic(self)[index]


@functools.cache
def _synthetic(spec: SyntheticSites) -> list[SiteData]:
    return [standardise(s) for s in generate(spec.scenario, spec.seed, num_sites=spec.num_sites)]


def _generator(state: RecordDict, seed: int, index: int) -> torch.Generator:
    """Site k's shuffling generator: seeded as in the simulator (``site_generator``), then
    resumed from the node's state."""
    generator = site_generator(seed, index)
    if GENERATOR in state:
        generator.set_state(torch.from_numpy(state[GENERATOR]["state"].numpy()))
    return generator


def _reply(update: SiteUpdate) -> RecordDict:
    """theta_k, N_k, log omega_k and the site's aggregate metrics; nothing else leaves."""
    if update.denominator is not None:
        raise ValueError("a privacy section's noised sums do not travel over Flower")
    metrics = {EXAMPLES: update.num_examples, LOG_OMEGA: update.log_omega, **update.metrics}
    return RecordDict({ARRAYS: to_record(update.params), METRICS: MetricRecord(metrics)})


def client_app(
    algorithm: Algorithm, sites: SiteSource, config: SimulationConfig, seed: int
) -> ClientApp:
    """A ClientApp whose train step is ``algorithm.local_update`` on the node's site.

    The node's partition id k names its site; theta_k (first round: the prior mean, as every
    site starts from the same point) and the generator persist in ``context.state``.
    """
    app = ClientApp()

    def site_of(context: Context) -> SiteContext:
        k = int(context.node_config["partition-id"])
        data = sites(k)
        model = algorithm.model or config.model

        def build() -> torch.nn.Module:
            return build_model(model, data.num_features)

        return SiteContext(data, build, config.training, _generator(context.state, seed, k))

    def personal(context: Context, prior: Params) -> Params:
        state = context.state
        return from_record(state[PERSONAL]) if PERSONAL in state else prior_mean(prior)

    def train(message: Message, context: Context) -> Message:
        site = site_of(context)
        prior = from_record(message.content[ARRAYS])
        round_ = int(message.content[CONFIG][ROUND])
        here = site.at_round(round_, config.rounds)  # that round's learning rate
        result = algorithm.local_update(here, prior, personal(context, prior), round_)
        context.state[PERSONAL] = to_record(result.personal)
        context.state[GENERATOR] = ArrayRecord({"state": Array(site.generator.get_state().numpy())})
        return Message(_reply(result.update), reply_to=message)

    def score(message: Message, context: Context) -> Message:
        site = site_of(context)
        prior = from_record(message.content[ARRAYS])
        scores = evaluate(site, algorithm.scoring_params(prior, personal(context, prior)))
        metrics = {EXAMPLES: int(site.data.y_val.shape[0]), **scores.values}
        return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=message)

    app.train()(train)
    app.evaluate()(score)
    return app


def _weighted_mean(
    metrics: Sequence[Mapping[str, float]], weights: Sequence[float]
) -> MetricRecord:
    """sum_k (N_k / N) m_k for each metric every reply carries (N_k itself excluded)."""
    keys = [
        k for k in metrics[0] if k not in (EXAMPLES, LOG_OMEGA) and all(k in m for m in metrics)
    ]
    mean = {k: sum(w * float(m[k]) for m, w in zip(metrics, weights, strict=True)) for k in keys}
    return MetricRecord({k: v / sum(weights) for k, v in mean.items()})


class FedMAPStrategy(Strategy):  # type: ignore[misc]  # flwr is absent where mypy runs
    """A Flower Strategy whose server step is ``algorithm.aggregate`` (pass ``FedMAP()``).

    Every connected node trains every round (FedMAP's tier 1). ``prior`` is the last broadcast
    prior, ``round_seconds`` the wall time of each round from sending to aggregating (with
    ``evaluate``: to the sites' validation scores aggregated), and, with ``evaluate``,
    ``scores[t]`` the sites' validation scores after round t.
    """

    def __init__(self, algorithm: Algorithm, num_sites: int, evaluate: bool = False) -> None:
        self.algorithm, self.num_sites, self.evaluate = algorithm, num_sites, evaluate
        self.prior: Params = {}
        self.round_seconds: list[float] = []
        self.scores: dict[int, dict[str, float]] = {}
        self._started = 0.0

    def summary(self) -> None:
        log(INFO, "\t├──> %s over %d nodes", self.algorithm.name, self.num_sites)

    def _messages(
        self, kind: str, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """One message per node, every node once connected (Flower's FedAvg samples them)."""
        while len(nodes := sorted(grid.get_node_ids())) < self.num_sites:
            time.sleep(0.1)
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        return [Message(content=content, message_type=kind, dst_node_id=n) for n in nodes]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._started = time.perf_counter()
        self.prior = from_record(arrays)
        config[ROUND] = server_round
        return self._messages(MessageType.TRAIN, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """gamma_t = algorithm.aggregate(updates, gamma_{t-1}) over the replies that arrived."""
        updates = [_update(m, server_round) for m in _valid(replies)]
        if not updates:
            return None, None
        self.prior = self.algorithm.aggregate(updates, self.prior)
        self.round_seconds.append(time.perf_counter() - self._started)
        metrics = _weighted_mean([u.metrics for u in updates], [u.num_examples for u in updates])
        return to_record(self.prior), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.evaluate:
            return []
        config[ROUND] = server_round
        return self._messages(MessageType.EVALUATE, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Validation scores averaged over the sites with weights N_k^val / N^val."""
        records = [dict(m.content[METRICS]) for m in _valid(replies)]
        if not records:
            return None
        scores = _weighted_mean(records, [r[EXAMPLES] for r in records])
        self.scores[server_round] = dict(scores)
        if len(self.round_seconds) == server_round:  # the round ends when its scores are in
            self.round_seconds[-1] = time.perf_counter() - self._started
        return scores


def _valid(replies: Iterable[Message]) -> list[Message]:
    """The replies without an error; a failed node is logged and left out of the round."""
    replies = list(replies)
    for m in (m for m in replies if m.has_error()):
        log(WARNING, "node %d failed: %s", m.metadata.src_node_id, m.error.reason)
    return [m for m in replies if not m.has_error()]


def _update(message: Message, round_: int) -> SiteUpdate:
    """The reply as the SiteUpdate ``aggregate`` takes; a site is known by its node id only."""
    metrics = dict(message.content[METRICS])
    return SiteUpdate(
        str(message.metadata.src_node_id),
        round_,
        from_record(message.content[ARRAYS]),
        int(metrics.pop(EXAMPLES)),
        float(metrics.pop(LOG_OMEGA)),
        {k: float(v) for k, v in metrics.items()},
    )


def initial_prior(
    algorithm: Algorithm, config: SimulationConfig, n_features: int, seed: int
) -> Params:
    """gamma_0: the simulator's starting point (``fedmap.initialisation``, drawn under seed)."""
    model = algorithm.model or config.model
    # the names only pick the seed site, on which the parameters drawn do not depend
    return initialise(lambda: build_model(model, n_features), ["server"], seed).prior


def server_app(strategy: FedMAPStrategy, prior: Params, rounds: int) -> ServerApp:
    """A ServerApp that runs strategy for rounds from the broadcast prior gamma_0."""
    app = ServerApp()

    def main(grid: Grid, context: Context) -> None:
        strategy.start(grid=grid, initial_arrays=to_record(prior), num_rounds=rounds)

    app.main()(main)
    return app


def ray_backend(cpus_per_site: float = 1.0, temp_dir: Path | None = None) -> dict[str, Any]:
    """Flower's Ray backend: a node's ClientApp takes cpus_per_site CPUs (so cores / that many
    train at once), and Ray's sockets and logs go under temp_dir."""
    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if temp_dir is not None:
        init["_temp_dir"] = str(temp_dir.resolve())
    return {"client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0}, "init_args": init}


def simulate(
    algorithm: Algorithm,
    sites: Sequence[SiteData] | SiteSource,
    config: SimulationConfig,
    seed: int,
    *,
    num_sites: int | None = None,
    n_features: int | None = None,
    evaluate: bool = False,
    backend: Mapping[str, Any] | None = None,
) -> FedMAPStrategy:
    """``config.rounds`` rounds of algorithm over sites in Flower's simulation runtime.

    sites is a list (shipped to the nodes) or a SiteSource with num_sites and n_features given.
    Returns the strategy: its ``prior`` is the final broadcast prior.
    """
    if isinstance(sites, Sequence):
        num_sites, n_features, sites = len(sites), sites[0].num_features, tuple(sites).__getitem__
    if num_sites is None or n_features is None:
        raise ValueError("a SiteSource needs num_sites and n_features")
    strategy = FedMAPStrategy(algorithm, num_sites, evaluate)
    server = server_app(strategy, initial_prior(algorithm, config, n_features, seed), config.rounds)
    client = client_app(algorithm, sites, config, seed)
    run_simulation(server, client, num_sites, backend_config=dict(backend or ray_backend()))
    return strategy
