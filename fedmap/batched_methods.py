"""What each method does at the sites in a batched round: the loop's ``local_update`` for all K
sites at once, producing the same ``SiteUpdate`` messages for the method's own ``aggregate``.

FedMAP (every prior), Individual, FedAvg, FedProx, FedAvg-FT, FedPer and Ditto run batched.
FedBN cannot: its BatchNorm statistics are buffers the forward pass rewrites, which a stacked
functional call does not carry (``NotBatched`` says so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor
from torch.func import vmap

from fedmap.algorithms import (
    Algorithm,
    Ditto,
    FedAvg,
    FedAvgFineTune,
    FedMAP,
    FedPer,
    FedProx,
    Individual,
    SiteUpdate,
)
from fedmap.algorithms.private import PrivateFedMAP
from fedmap.models import is_head_key
from fedmap.objective import gaussian_prior_penalty, log_omega
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.stacked import Stacked, broadcast, expand, sites_in, unstack

if TYPE_CHECKING:
    from fedmap.batched import Engine, StackedPenalty


class NotBatched(ValueError):
    """The batched engine cannot run this method, model or task; the message says why."""


class BatchedMethod(Protocol):
    """A method's site side for all sites at once (its server side is its own ``aggregate``)."""

    def round(
        self, engine: Engine, prior: Params, personal: Stacked, round_: int
    ) -> tuple[list[SiteUpdate], Stacked]: ...

    def scoring(self, prior: Params, personal: Stacked) -> Stacked:
        """The parameters every site is scored with, stacked."""
        ...

    def finalise(self, engine: Engine, prior: Params, personal: Stacked) -> Stacked: ...


def per_site(
    penalty: Callable[[Mapping[str, Tensor], Params], Tensor], prior: Params
) -> StackedPenalty:
    """(R(theta_k))_k: a one-site penalty R(theta) = -log rho(theta | prior) + const, vmapped over
    the stacked theta."""

    def one(theta: Mapping[str, Tensor]) -> Tensor:
        return penalty(theta, prior)

    batched: StackedPenalty = vmap(one)
    return batched


def proximal(prior: Params, variance: float) -> StackedPenalty:
    """||theta_k - theta_g||^2 / (2 sigma^2) per site (FedProx with sigma^2 = 1/mu, Ditto)."""
    return per_site(lambda theta, p: gaussian_prior_penalty(theta, p, variance), prior)


def messages(
    engine: Engine,
    round_: int,
    sent: Stacked | None,
    nlls: Sequence[float],
    log_omegas: list[float] | None = None,
    extra: Mapping[str, list[float]] | None = None,
) -> list[SiteUpdate]:
    """One ``SiteUpdate`` per site: its row of sent (nothing for None), N_k, log omega_k and its
    mean training NLL (and any extra metrics)."""
    out = []
    for k, (name, n) in enumerate(zip(engine.names, engine.sizes, strict=True)):
        metrics = {"train_nll": float(nlls[k])}
        metrics.update({key: values[k] for key, values in (extra or {}).items()})
        params = {} if sent is None else unstack(sent, k)
        omega = 0.0 if log_omegas is None else log_omegas[k]
        out.append(SiteUpdate(name, round_, params, n, omega, metrics))
    return out


@dataclass(frozen=True)
class BatchedFedMAP:
    """FedMAP.local_update for every site: MAP under the broadcast prior, then log omega_k."""

    method: FedMAP

    def round(
        self, engine: Engine, prior: Params, personal: Stacked, round_: int
    ) -> tuple[list[SiteUpdate], Stacked]:
        m = self.method
        start = personal if m.warm_start else broadcast(prior_mean(prior), len(engine.names))
        rho = m.family(m.variances(engine.model.state_dict()))
        penalty = per_site(rho.penalty, prior)
        theta = engine.fit(start, penalty)
        nlls = engine.nll(theta).tolist()  # one transfer, not one per site
        with torch.no_grad():
            r = penalty(theta).tolist()
        extra = {"prior_penalty": list(r)}
        if m.prior != "gaussian":
            # log of rho's normalising constant: a property of the density, the same at every
            # site (it depends on theta only through its shapes), so computed once a round
            log_norm = rho.log_normaliser(unstack(theta, 0), prior)
            extra["prior_log_normaliser"] = [log_norm] * len(r)
            r = [value + log_norm for value in r]
        # eq. 8: log omega_k = -mean NLL(theta_k) - R(theta_k) / N_k
        omegas = [log_omega(nlls[k], r[k], n) for k, n in enumerate(engine.sizes)]
        return messages(engine, round_, theta, nlls, omegas, extra), theta

    def scoring(self, prior: Params, personal: Stacked) -> Stacked:
        return personal

    def finalise(self, engine: Engine, prior: Params, personal: Stacked) -> Stacked:
        return personal


@dataclass(frozen=True)
class BatchedIndividual:
    """Another round of local epochs at every site; nothing is sent."""

    def round(
        self, engine: Engine, prior: Params, personal: Stacked, round_: int
    ) -> tuple[list[SiteUpdate], Stacked]:
        theta = engine.fit(personal)
        return messages(engine, round_, None, engine.nll(theta).tolist()), theta

    def scoring(self, prior: Params, personal: Stacked) -> Stacked:
        return personal

    def finalise(self, engine: Engine, prior: Params, personal: Stacked) -> Stacked:
        return personal


@dataclass(frozen=True)
class BatchedGlobal:
    """FedAvg (mu = 0), FedProx (mu > 0) and FedAvg-FT (fine_tune epochs at the end): every site
    trains the global model and sends it."""

    mu: float = 0.0
    fine_tune: int | None = None

    def round(
        self, engine: Engine, prior: Params, personal: Stacked, round_: int
    ) -> tuple[list[SiteUpdate], Stacked]:
        penalty = proximal(prior, 1.0 / self.mu) if self.mu > 0 else None
        theta = engine.fit(broadcast(prior, len(engine.names)), penalty)
        return messages(engine, round_, theta, engine.nll(theta).tolist()), theta

    def scoring(self, prior: Params, personal: Stacked) -> Stacked:
        if self.fine_tune is not None:
            return personal
        return expand(prior, sites_in(personal))

    def finalise(self, engine: Engine, prior: Params, personal: Stacked) -> Stacked:
        if self.fine_tune is None:
            return personal
        return engine.fit(broadcast(prior, len(engine.names)), epochs=self.fine_tune)


@dataclass(frozen=True)
class BatchedFedPer:
    """The global base with each site's own head; only the base is sent."""

    def _merged(self, prior: Params, personal: Stacked) -> Stacked:
        sites = sites_in(personal)
        base = broadcast({k: v for k, v in prior.items() if not is_head_key(k)}, sites)
        return {k: (personal[k] if is_head_key(k) else base[k]) for k in prior}

    def round(
        self, engine: Engine, prior: Params, personal: Stacked, round_: int
    ) -> tuple[list[SiteUpdate], Stacked]:
        theta = engine.fit(self._merged(prior, personal))
        sent = {k: v for k, v in theta.items() if not is_head_key(k)}
        return messages(engine, round_, sent, engine.nll(theta).tolist()), theta

    def scoring(self, prior: Params, personal: Stacked) -> Stacked:
        return self._merged(prior, personal)

    def finalise(self, engine: Engine, prior: Params, personal: Stacked) -> Stacked:
        return personal


@dataclass(frozen=True)
class BatchedDitto:
    """The FedAvg step (sent), then each site's own v_k near the global model (kept)."""

    lam: float

    def round(
        self, engine: Engine, prior: Params, personal: Stacked, round_: int
    ) -> tuple[list[SiteUpdate], Stacked]:
        sent = engine.fit(broadcast(prior, len(engine.names)))
        own = engine.fit(personal, proximal(prior, 1.0 / self.lam))
        return messages(engine, round_, sent, engine.nll(sent).tolist()), own

    def scoring(self, prior: Params, personal: Stacked) -> Stacked:
        return personal

    def finalise(self, engine: Engine, prior: Params, personal: Stacked) -> Stacked:
        return personal


def batched_method(algorithm: Algorithm) -> BatchedMethod:
    """The batched site side of algorithm, or ``NotBatched`` naming the method."""
    if isinstance(algorithm, PrivateFedMAP):
        raise NotBatched(
            "the batched engine cannot run fedmap under a privacy section: each site clips, "
            "noises and encrypts its own release (use --engine loop)"
        )
    if isinstance(algorithm, FedMAP):
        return BatchedFedMAP(algorithm)
    if isinstance(algorithm, Individual):
        return BatchedIndividual()
    if isinstance(algorithm, FedAvg):
        return BatchedGlobal()
    if isinstance(algorithm, FedProx):
        return BatchedGlobal(mu=algorithm.mu)
    if isinstance(algorithm, FedAvgFineTune):
        return BatchedGlobal(fine_tune=algorithm.epochs)
    if isinstance(algorithm, FedPer):
        return BatchedFedPer()
    if isinstance(algorithm, Ditto):
        return BatchedDitto(algorithm.lam)
    why = {
        "fedbn": "its BatchNorm statistics are buffers the forward pass rewrites",
    }.get(algorithm.name, "it has no batched site step")
    raise NotBatched(f"the batched engine cannot run {algorithm.name}: {why} (use --engine loop)")
