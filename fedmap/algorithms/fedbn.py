"""FedBN (Li et al. 2021): FedAvg on everything except BatchNorm layers, which stay local.

Runs on the MLP with BatchNorm. A site sends every entry but its BatchNorm weights, biases and
running statistics; it is scored with the shared layers plus its own BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedmap.algorithms.common import fit, sample_weighted_mean, shared_part, update_from
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.models import batchnorm_keys_of
from fedmap.params import Params, get_params, merge


@dataclass(frozen=True)
class FedBN:
    """Federated averaging with site-local BatchNorm."""

    name: str = field(default="fedbn", init=False)
    model: str | None = field(default="mlp-bn", init=False)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        model = fit(site, self.scoring_params(prior, personal))
        theta = get_params(model)
        sent = shared_part(theta, batchnorm_keys_of(theta))
        return LocalResult(update_from(site, round_, model, sent), theta)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return sample_weighted_mean(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return merge(prior, personal, batchnorm_keys_of(prior))
