"""FedPer (Arivazhagan et al. 2019): shared base layers, a personal head per site.

A site trains the global base with its own head and sends only the base; the server averages the
bases by sample count. The head never leaves the site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedmap.algorithms.common import fit, sample_weighted_mean, shared_part, update_from
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.models import is_head_key
from fedmap.params import Params, get_params, merge


def _head(params: Params) -> frozenset[str]:
    return frozenset(k for k in params if is_head_key(k))


@dataclass(frozen=True)
class FedPer:
    """Base layers federated, head personal."""

    name: str = field(default="fedper", init=False)
    model: str | None = field(default=None, init=False)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        model = fit(site, self.scoring_params(prior, personal))
        theta = get_params(model)
        return LocalResult(
            update_from(site, round_, model, shared_part(theta, _head(theta))), theta
        )

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return sample_weighted_mean(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return merge(prior, personal, _head(prior))
