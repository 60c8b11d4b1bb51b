"""The batched engine: every site of a round trained in one computation (``--engine batched``).

The loop engine (``fedmap.simulator.simulate``) calls ``Algorithm.local_update`` once per site, so
a round of K small models costs K times Python's and PyTorch's dispatch overhead, which at the
paper's scale dwarfs the arithmetic. Here the sites' models share one architecture, so their
parameters are stacked (``fedmap.stacked``) and each minibatch step runs all K forward and
backward passes as one vmapped call, with one Adam step per site. Each site still shuffles with
its own generator, skips what ``train_local`` skips and sits out the steps after its own epoch
ends, so it follows the trajectory the loop gives it: the two engines agree to float rounding
(``tests/fedmap/test_batched.py`` states the tolerance). The server step is the algorithm's own
``aggregate``, on the same ``SiteUpdate`` messages.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from fedmap.algorithms import Algorithm
from fedmap.batched_methods import NotBatched as NotBatched
from fedmap.batched_methods import batched_method
from fedmap.data import SiteData, Task
from fedmap.initialisation import Initialisation, initialise
from fedmap.metrics import Reliability, TaskScores, reliability, score_task
from fedmap.models import build_model
from fedmap.simulator import (
    RoundCallback,
    SimulationConfig,
    SimulationResult,
    check_sites,
    site_generator,
)
from fedmap.stacked import (
    Adam,
    Layout,
    Rows,
    Stacked,
    batches_per_epoch,
    concatenate,
    epoch_orders,
    forward,
    masked_nll,
    stack,
)
from fedmap.training import LocalTraining

StackedPenalty = Callable[[Mapping[str, Tensor]], Tensor]
"""R(theta_k) for every site at once: stacked parameters in, a (K,) tensor out."""


ROWS_PER_BLOCK = 1 << 18
"""Rows of all sites together that one evaluation pass holds (about 33 MB of MLP activations)."""


@dataclass(frozen=True)
class Engine:
    """The sites' rows and generators, and the batched operations a method needs."""

    model: nn.Module
    train: Rows
    val: Rows
    training: LocalTraining
    generators: Sequence[torch.Generator]
    names: tuple[str, ...]

    @property
    def sizes(self) -> list[int]:
        """N_k: each site's training rows."""
        return [int(n) for n in self.train.sizes.tolist()]

    @property
    def task(self) -> Task:
        return "survival" if self.val.y.ndim == 2 else "binary"

    def fit(
        self,
        start: Mapping[str, Tensor],
        penalty: StackedPenalty | None = None,
        epochs: int | None = None,
    ) -> Stacked:
        """``train_local`` at every site at once: Adam on mean NLL (+ R) over minibatches.

        Step s trains the sites still in their epoch (s < their batches per epoch) on rows
        order_k[sB : (s+1)B] of their own shuffle; the others sit out. The loss is the sum of
        the active sites' losses, so each gradient is the site's own:
        d/d theta_k sum_j L_j(theta_j) = dL_k/d theta_k.
        """
        cfg = self.training
        layout = Layout.of(start)
        flat = layout.flatten(start).detach()
        adam = Adam.start(flat, cfg.lr)
        f = forward(self.model)
        device = flat.device
        sizes = self.sizes
        per_epoch = torch.tensor(batches_per_epoch(sizes, cfg.batch_size), device=device)
        everyone = torch.arange(len(sizes), device=device)
        for _ in range(cfg.epochs if epochs is None else epochs):
            orders = epoch_orders(sizes, self.generators).to(device)
            for s in range(int(per_epoch.max())):
                active = s < per_epoch
                all_in = bool(active.all())
                sites = everyone if all_in else active.nonzero().squeeze(1)
                lo = s * cfg.batch_size
                idx = orders[sites, lo : lo + cfg.batch_size]
                positions = lo + torch.arange(idx.shape[1], device=device)
                row_mask = positions.unsqueeze(0) < self.train.sizes[sites].unsqueeze(1)
                x, y = self.train.take(sites, idx, row_mask)
                rows = flat if all_in else flat.index_select(0, sites)
                leaf = rows.detach().requires_grad_(True)  # flat itself never joins a graph
                params = layout.views(leaf)
                loss = masked_nll(f(params, x), y, row_mask)
                if penalty is not None:
                    loss = loss + penalty(params)
                (grad,) = torch.autograd.grad(loss.sum(), [leaf])
                if all_in:
                    flat = adam.step(leaf.detach(), grad)
                else:
                    moved = adam.step(leaf.detach(), grad, sites)
                    flat = flat.index_copy(0, sites, moved)
        return {k: v.contiguous() for k, v in layout.views(flat).items()}

    def forward_all(self, params: Mapping[str, Tensor], rows: Rows) -> Tensor:
        """(K, N_max): phi(x; theta_k) on every row of site k, zero past its last row; in blocks
        of ``ROWS_PER_BLOCK`` rows over the sites that have rows there, without a graph."""
        f = forward(self.model)
        sites = len(rows.sizes)
        with torch.no_grad():
            if rows.uniform:
                return f(params, rows.x.view(sites, -1, rows.x.shape[1]))
            out = rows.x.new_zeros((sites, int(rows.sizes.max())))
            width = max(1, ROWS_PER_BLOCK // sites)
            for chosen, lo, mask in rows.blocks(width):
                positions = lo + torch.arange(width, device=rows.x.device)
                x, _ = rows.take(chosen, positions.expand(len(chosen), width), mask)
                own = {k: v.index_select(0, chosen) for k, v in params.items()}
                value = torch.where(mask, f(own, x), torch.zeros_like(mask, dtype=out.dtype))
                hi = min(lo + width, out.shape[1])
                out[chosen, lo:hi] = value[:, : hi - lo]
            return out

    def nll(self, params: Mapping[str, Tensor]) -> Tensor:
        """(K,): mean NLL of theta_k on site k's whole training split (``dataset_nll``; survival:
        the risk sets span the whole split)."""
        y, mask = self.train.padded_y
        return masked_nll(self.forward_all(params, self.train), y, mask)

    def outputs(self, params: Mapping[str, Tensor]) -> Tensor:
        """(K, M_max) on site k's validation rows: p(y = 1 | x) for a binary task, the log
        relative risk for a survival task (``predict_output``)."""
        out = self.forward_all(params, self.val)
        return torch.sigmoid(out) if self.task == "binary" else out

    def primary(self, params: Mapping[str, Tensor]) -> list[float]:
        """The task's primary validation metric per site: accuracy (1/M_k) sum_i
        [1(p_ki >= 1/2) == y_ki] computed here, or the C-index by ``score_task``."""
        if self.task != "binary":
            return [s.primary for s in self.scores(params).values()]
        y, mask = self.val.padded_y
        hit = ((self.outputs(params) >= 0.5).to(y.dtype) == y) & mask
        return (hit.sum(dim=1).double() / self.val.sizes.double()).tolist()

    def scores(self, params: Mapping[str, Tensor]) -> dict[str, TaskScores]:
        """Every validation metric per site, by ``score_task`` on the site's own rows."""
        return self.final(params)[0]

    def final(
        self, params: Mapping[str, Tensor]
    ) -> tuple[dict[str, TaskScores], dict[str, Reliability]]:
        """``scores`` and, for a binary task, each site's reliability curve, from one pass over
        the validation rows."""
        out = self.outputs(params).cpu().numpy()
        y = self.val.padded_y[0].cpu().numpy()
        scores, curves = {}, {}
        for k, (name, n) in enumerate(zip(self.names, self.val.sizes.tolist(), strict=True)):
            scores[name] = score_task(self.task, y[k, :n], out[k, :n])
            if self.task == "binary":
                curves[name] = reliability(y[k, :n], out[k, :n])
        return scores, curves


def stackable(model: nn.Module, name: str) -> nn.Module:
    """model, or ``NotBatched`` when it has buffers (BatchNorm statistics change in the forward
    pass, which a stacked functional call does not carry)."""
    if any(True for _ in model.buffers()):
        raise NotBatched(
            f"the batched engine cannot stack model {name!r}: its buffers (BatchNorm "
            "statistics) change in the forward pass (use --engine loop)"
        )
    return model


def check(algorithm: Algorithm, model_name: str) -> None:
    """``NotBatched`` now, before any run, when the batched engine cannot run this method with
    this model."""
    batched_method(algorithm)
    name = algorithm.model or model_name
    stackable(build_model(name, 2), name)


def engine_for(
    model_name: str, sites: Sequence[SiteData], config: SimulationConfig, seed: int
) -> Engine:
    """The engine over sites, or ``NotBatched`` naming what it cannot stack."""
    model = build_model(model_name, sites[0].num_features).to(sites[0].x_train.device)
    stackable(model, model_name)
    generators = [site_generator(seed, k) for k in range(len(sites))]
    return Engine(
        model,
        concatenate(sites, "train"),
        concatenate(sites, "val"),
        config.training,
        generators,
        tuple(s.name for s in sites),
    )


def simulate_batched(
    algorithm: Algorithm,
    sites: Sequence[SiteData],
    config: SimulationConfig,
    seed: int,
    on_round: RoundCallback | None = None,
    start: Initialisation | None = None,
) -> SimulationResult:
    """``fedmap.simulator.simulate`` with every site's local step batched (same arguments,
    same result, to float rounding)."""
    check_sites(sites)
    method = batched_method(algorithm)
    model_name = algorithm.model or config.model
    engine = engine_for(model_name, sites, config, seed)
    names = list(engine.names)
    build = functools.partial(build_model, model_name, sites[0].num_features)
    init = start if start is not None else initialise(build, names, seed)
    device = sites[0].x_train.device
    prior = {k: v.to(device) for k, v in init.prior.items()}
    personal = stack([{k: v.to(device) for k, v in init.personal[n].items()} for n in names])
    history: list[list[float]] = []
    began = time.perf_counter()
    for t in range(1, config.rounds + 1):
        now = replace(engine, training=engine.training.at(t, config.rounds))
        updates, personal = method.round(now, prior, personal, t)
        prior = algorithm.aggregate(updates, prior)
        history.append(engine.primary(method.scoring(prior, personal)))
        if on_round is not None:
            on_round(t)
    elapsed = time.perf_counter() - began
    final, curves = engine.final(method.scoring(prior, method.finalise(engine, prior, personal)))
    return SimulationResult(
        algorithm.name,
        seed,
        init.seed_site,
        tuple(names),
        final,
        history,
        elapsed / config.rounds,
        engine.task,
        prior,
        curves,
        {s.name: s.num_scored for s in sites},
    )
