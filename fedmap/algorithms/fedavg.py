"""FedAvg, FedProx, and FedAvg followed by local fine-tuning.

All three train from the global model and the server takes the sample-weighted mean
theta_g = sum_k (N_k / N) theta_k. FedProx adds (mu/2)||theta - theta_g||^2 to the local loss.
FedAvg-FT runs FedAvg and then fine-tunes the final global model at each site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from fedmap.algorithms.common import fit, sample_weighted_mean, update_from
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.objective import gaussian_prior_penalty
from fedmap.params import Params, get_params


def _global_step(site: SiteContext, prior: Params, round_: int, mu: float) -> LocalResult:
    def proximal(theta: dict[str, Tensor]) -> Tensor:
        return gaussian_prior_penalty(theta, prior, 1.0 / mu)

    model = fit(site, prior, proximal if mu > 0 else None)
    theta = get_params(model)
    return LocalResult(update_from(site, round_, model, theta), theta)


@dataclass(frozen=True)
class FedAvg:
    """McMahan et al. 2017; every site is scored with the global model."""

    name: str = field(default="fedavg", init=False)
    model: str | None = field(default=None, init=False)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        return _global_step(site, prior, round_, mu=0.0)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return sample_weighted_mean(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return prior


@dataclass(frozen=True)
class FedProx:
    """Li et al. 2020: FedAvg with a proximal term mu/2 ||theta - theta_g||^2."""

    mu: float = 0.01
    name: str = field(default="fedprox", init=False)
    model: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.mu <= 0:
            raise ValueError(f"FedProx needs mu > 0, got {self.mu}")

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        return _global_step(site, prior, round_, mu=self.mu)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return sample_weighted_mean(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return prior


@dataclass(frozen=True)
class FedAvgFineTune:
    """FedAvg, then each site fine-tunes the final global model for ``epochs`` local epochs.

    During training a site is scored with the global model after that round's local epochs.
    """

    epochs: int = 5
    name: str = field(default="fedavg-ft", init=False)
    model: str | None = field(default=None, init=False)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        return _global_step(site, prior, round_, mu=0.0)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return sample_weighted_mean(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return get_params(fit(site, prior, epochs=self.epochs))

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return personal
