"""In-process simulation of a federation: every site and the server in one Python process.

The simulator only moves messages around: sites run ``Algorithm.local_update`` on their own data,
the server runs ``Algorithm.aggregate`` on the ``SiteUpdate`` messages. Nothing else crosses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from numpy.typing import NDArray

from fedmap.algorithms import Algorithm, SiteContext
from fedmap.data import SiteData, Task
from fedmap.initialisation import Initialisation, initialise
from fedmap.metrics import (
    PRIMARY_METRIC,
    Reliability,
    TaskScores,
    predict_output,
    reliability,
    score_task,
)
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.training import LocalTraining

EngineName = Literal["loop", "batched"]
ENGINES: tuple[str, ...] = get_args(EngineName)


@dataclass(frozen=True)
class SimulationConfig:
    """Federation-wide settings; methods carry their own hyper-parameters."""

    rounds: int = 40
    model: str = "mlp"
    training: LocalTraining = field(default_factory=LocalTraining)
    device: str = "cpu"
    engine: EngineName = "loop"
    """loop: one ``local_update`` call per site (every method); batched: every site of a round in
    one vmapped computation (``fedmap.batched``; same results to float rounding, far faster with
    many sites)."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")


@dataclass(frozen=True)
class SimulationResult:
    method: str
    seed: int
    seed_site: str
    sites: tuple[str, ...]
    final: dict[str, TaskScores]
    """Validation scores of each site's scoring model after the last round (and fine-tuning)."""
    history: list[list[float]]
    """Validation score in the task's primary metric per round (rows) and site (columns)."""
    seconds_per_round: float
    task: Task = "binary"
    prior: Params = field(default_factory=dict)
    """What the server broadcasts after the last round (FedMAP's gamma, FedAvg's global model)."""
    reliability: dict[str, Reliability] = field(default_factory=dict)
    """Binary tasks: the reliability curve of each site's scoring model (the one ``final``
    scores) on its validation split; empty for a survival task."""
    n_scored: dict[str, int] = field(default_factory=dict)
    """Validation rows each site's ``final`` scores were computed on."""

    @property
    def metric(self) -> str:
        """The primary metric the history holds: accuracy (binary) or c_index (survival)."""
        return PRIMARY_METRIC[self.task]


RoundCallback = Callable[[int], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when the site has a GPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def validation_output(
    site: SiteContext, params: Params
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(targets, ``predict_output``) of params on the site's validation split, on the CPU."""
    output = predict_output(site.model_from(params), site.data.x_val, site.data.task)
    return site.data.y_val.cpu().numpy(), output.cpu().numpy()


def evaluate(site: SiteContext, params: Params) -> TaskScores:
    """Scores of params on the site's validation split, for the site's task."""
    return score_task(site.data.task, *validation_output(site, params))


def site_generator(seed: int, k: int) -> torch.Generator:
    """Site k's shuffling generator, seeded (seed * 1009 + k) on the CPU: every engine and
    runtime that drives a run (loop, batched, Flower) shuffles site k alike, so runs repeat."""
    return torch.Generator().manual_seed(seed * 1009 + k)


def check_sites(sites: Sequence[SiteData]) -> None:
    """A simulation needs at least one site, and every site must serve the same task."""
    if not sites:
        raise ValueError("a simulation needs at least one site")
    tasks = {s.task for s in sites}
    if len(tasks) > 1:
        raise ValueError(f"every site must serve one task, got {', '.join(sorted(tasks))}")


def simulate(
    algorithm: Algorithm,
    sites: Sequence[SiteData],
    config: SimulationConfig,
    seed: int,
    on_round: RoundCallback | None = None,
    start: Initialisation | None = None,
) -> SimulationResult:
    """Run ``config.rounds`` communication rounds of algorithm over sites (Algorithm 1).

    Site k shuffles with its own generator seeded from (seed, k), so a run repeats exactly.
    ``start``: where round 1 begins (``fedmap.initialisation.warm_start`` from a released prior);
    None is line 1 of Algorithm 1 under seed.
    Every site must serve the same task. ``config.engine == "batched"`` hands the run to
    ``fedmap.batched.simulate_batched``.
    """
    if config.engine == "batched":
        from fedmap.batched import simulate_batched  # it builds on this module

        return simulate_batched(algorithm, sites, config, seed, on_round, start)
    check_sites(sites)
    names = [s.name for s in sites]
    n_features = sites[0].num_features
    model_name = algorithm.model or config.model

    def build() -> torch.nn.Module:
        return build_model(model_name, n_features)

    contexts = [
        SiteContext(data, build, config.training, site_generator(seed, k))
        for k, data in enumerate(sites)
    ]
    init = start if start is not None else initialise(build, names, seed)
    device = sites[0].x_train.device  # the starting point is drawn on the CPU, so runs repeat

    def on_device(params: Params) -> Params:
        return {k: v.to(device) for k, v in params.items()}

    prior = on_device(init.prior)
    personal = {name: on_device(p) for name, p in init.personal.items()}
    history: list[list[float]] = []
    began = time.perf_counter()
    for t in range(1, config.rounds + 1):
        results = [
            algorithm.local_update(c.at_round(t, config.rounds), prior, personal[c.data.name], t)
            for c in contexts
        ]
        personal = {r.update.site: r.personal for r in results}
        prior = algorithm.aggregate([r.update for r in results], prior)
        history.append(
            [
                evaluate(c, algorithm.scoring_params(prior, personal[c.data.name])).primary
                for c in contexts
            ]
        )
        if on_round is not None:
            on_round(t)
    elapsed = time.perf_counter() - began
    task = sites[0].task
    final, curves = {}, {}
    for c in contexts:
        own = algorithm.finalise(c, prior, personal[c.data.name])
        y, output = validation_output(c, algorithm.scoring_params(prior, own))
        final[c.data.name] = score_task(task, y, output)
        if task == "binary":
            curves[c.data.name] = reliability(y, output)
    return SimulationResult(
        algorithm.name,
        seed,
        init.seed_site,
        tuple(names),
        final,
        history,
        elapsed / config.rounds,
        task,
        prior,
        curves,
        {s.name: s.num_scored for s in sites},
    )
