"""After the last round: score every model where its data lives, and fine-tune tier-2 sites.

Only aggregate metrics leave a site: ``<federation>/<run>/evaluation/<site>.json`` holds the
validation accuracy, balanced accuracy and ROC-AUC of the site's own model and of the prior mean.
Tier-2 sites fine-tune the final prior with the same local MAP objective and keep the result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from site_tasks.federation import FederationConfig
from site_tasks.storage import Keys, ObjectStore
from site_tasks.train import fit_site, keep_state, prepare, score_params

log = logging.getLogger("site_tasks")


@dataclass(frozen=True)
class SiteEvaluation:
    site: str
    tier: int
    personalised: dict[str, float]
    """The site's own model: theta_k (tier 1) or its fine-tuned model (tier 2)."""
    prior: dict[str, float]
    """The final prior mean gamma on the same validation split."""


def _publish(
    config: FederationConfig, store: ObjectStore, result: SiteEvaluation
) -> SiteEvaluation:
    key = Keys.of(config).evaluation(result.site)
    store.put(key, (json.dumps(asdict(result), indent=1, sort_keys=True) + "\n").encode())
    log.info(
        "%s: personalised accuracy %.4f, prior accuracy %.4f -> %s",
        result.site,
        result.personalised["accuracy"],
        result.prior["accuracy"],
        key,
    )
    return result


def evaluate(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> SiteEvaluation:
    """Score a tier-1 site's theta_k after the last round, and the final prior, on its data."""
    ready = prepare(config, site, rounds + 1, store)
    own = score_params(ready.context, ready.personal).as_dict()
    mean = score_params(ready.context, ready.prior).as_dict()
    return _publish(config, store, SiteEvaluation(site, 1, own, mean))


def finetune(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> SiteEvaluation:
    """Tier 2: run the local MAP objective under the final prior, keep the model, report scores.

    The site never contributes: its parameters and omega stay on its own disk.
    """
    ready = prepare(config, site, rounds + 1, store)
    fitted = fit_site(config, site, rounds + 1, ready)
    keep_state(config, site, rounds + 1, fitted.personal)
    own = score_params(ready.context, fitted.personal).as_dict()
    mean = score_params(ready.context, ready.prior).as_dict()
    return _publish(config, store, SiteEvaluation(site, 2, own, mean))
