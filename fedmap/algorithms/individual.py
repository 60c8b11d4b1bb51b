"""Individual: every site trains alone on its own data; nothing is shared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedmap.algorithms.common import fit, update_from
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
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
