"""Individual: every site trains alone on its own data; nothing is shared."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from fedmap.algorithms.common import fit, update_from
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.data import SiteData
from fedmap.params import Params, get_params


@dataclass(frozen=True)
class Individual:
    """Local-only training; a round is one more round of local epochs."""

    name: str = field(default="individual", init=False)
    model: str | None = field(default=None, init=False)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        model = fit(site, personal)
        theta = get_params(model)
        return LocalResult(update_from(site, round_, model, {}), theta)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return prior

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return personal


@dataclass(frozen=True)
class EarlyStopped:
    """The kept round of an early-stopped local run and its validation score."""

    params: Params
    round: int
    score: float


def early_stopped(
    site: SiteContext, start: Params, rounds: int, score: Callable[[Params], float]
) -> EarlyStopped:
    """Individual with early stopping: run ``rounds`` rounds of local epochs from start (the
    budget of a federated site) and keep the round t* = argmax_t score(theta_t), the earliest
    on a tie; a NaN score never wins. ``score`` is a validation metric, higher is better. With
    rounds = 0 the start is kept."""
    best = EarlyStopped(start, 0, score(start) if rounds == 0 else -math.inf)
    params = start
    for t in range(1, rounds + 1):
        params = Individual().local_update(site.at_round(t, rounds), params, params, t).personal
        value = score(params)
        if value > best.score:  # False for NaN
            best = EarlyStopped(params, t, value)
    return best if best.round or rounds == 0 else EarlyStopped(params, rounds, best.score)


def holdout(data: SiteData, fraction: float, generator: torch.Generator) -> SiteData:
    """The site's training rows split in two: round(fraction n_c) rows of each class c (all
    rows together for survival) become the early-stopping split (``x_val``, ``y_val``) and the
    rest the rows to train on. The site's own validation split is not touched."""
    y = data.y_train
    groups = (
        [torch.nonzero(y == c).flatten() for c in (0, 1)]
        if data.task == "binary"
        else [torch.arange(len(y))]
    )
    held, kept = [], []
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n = round(len(idx) * fraction)
        held.append(idx[:n])
        kept.append(idx[n:])
    h, k = torch.cat(held), torch.cat(kept)
    return replace(data, x_train=data.x_train[k], y_train=y[k], x_val=data.x_train[h], y_val=y[h])


def local_only(
    site: SiteContext,
    start: Params,
    rounds: int,
    score: Callable[[SiteContext, Params], float],
    fraction: float = 0.2,
) -> EarlyStopped:
    """The local-only baseline with early stopping that never sees the rows it is scored on:

    1. t* = the best round of :func:`early_stopped`, training on (1 - fraction) of the site's
       training rows and scoring on the held-out fraction (:func:`holdout`);
    2. a refit from start on all training rows for t* rounds (t* = rounds when the held-out
       split is too small to choose with: under 2 rows of each class).

    ``score(context, params)``: the metric on ``context.data``'s validation split, higher is
    better. The returned score is that of step 1, on the held-out rows."""
    inner = holdout(site.data, fraction, site.generator)
    counts = (
        [int((inner.y_val == c).sum()) for c in (0, 1)]
        if inner.task == "binary"
        else [len(inner.y_val)]
    )
    if min(counts) < 2:
        chosen = EarlyStopped(start, rounds, math.nan)
    else:
        inner_site = replace(site, data=inner)
        chosen = early_stopped(inner_site, start, rounds, lambda p: score(inner_site, p))
    params = start
    for t in range(1, chosen.round + 1):  # the schedule of the rounds it replays
        params = Individual().local_update(site.at_round(t, rounds), params, params, t).personal
    return EarlyStopped(params, chosen.round, chosen.score)
