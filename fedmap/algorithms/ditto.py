"""Ditto (Li et al. 2021): a FedAvg global model plus a personal model held near it.

Each round site k (a) trains the global model w as in FedAvg and sends it, and (b) trains its own
v_k on mean NLL + (lambda/2)||v_k - w||^2, which it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from fedmap.algorithms.common import fit, sample_weighted_mean, update_from
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.objective import gaussian_prior_penalty
from fedmap.params import Params, get_params


@dataclass(frozen=True)
class Ditto:
    """Personal models regularised towards the FedAvg global model with strength lam."""

    lam: float = 0.1
    name: str = field(default="ditto", init=False)
    model: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.lam <= 0:
            raise ValueError(f"Ditto needs lam > 0, got {self.lam}")

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        global_model = fit(site, prior)

        def proximal(v: dict[str, Tensor]) -> Tensor:
            return gaussian_prior_penalty(v, prior, 1.0 / self.lam)

        own = get_params(fit(site, personal, proximal))
        sent = get_params(global_model)
        return LocalResult(update_from(site, round_, global_model, sent), own)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return sample_weighted_mean(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return personal
