"""After the last round: score every model where its data lives, and fine-tune tier-2 sites.

Only aggregate metrics leave a site: ``<federation>/<run>/evaluation/<site>.json`` holds the
validation accuracy, balanced accuracy and ROC-AUC of the site's own model, of the prior mean,
and of a local model trained on the site's data alone (the "Individual" baseline each site's
gain is measured against). Tier-2 sites fine-tune the final prior with the same local MAP
objective and keep the result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace

from fedmap.algorithms import Individual
from site_tasks.federation import FederationConfig
from site_tasks.storage import Keys, ObjectStore
from site_tasks.train import Prepared, fetch_prior, fit_site, keep_state, prepare, score_params

log = logging.getLogger("site_tasks")


@dataclass(frozen=True)
class SiteEvaluation:
    site: str
    tier: int
    personalised: dict[str, float]
    """The site's own model: theta_k (tier 1) or its fine-tuned model (tier 2)."""
    prior: dict[str, float]
    """The final prior mean gamma on the same validation split."""
    local: dict[str, float]
    """A model trained on this site's data alone with the same budget (rounds x epochs)."""


def _publish(
    config: FederationConfig, store: ObjectStore, result: SiteEvaluation
) -> SiteEvaluation:
    key = Keys.of(config).evaluation(result.site)
    store.put(key, (json.dumps(asdict(result), indent=1, sort_keys=True) + "\n").encode())
    log.info(
        "%s: personalised accuracy %.4f, prior %.4f, local only %.4f -> %s",
        result.site,
        result.personalised["accuracy"],
        result.prior["accuracy"],
        result.local["accuracy"],
        key,
    )
    return result


def local_baseline(
    config: FederationConfig, store: ObjectStore, ready: Prepared, rounds: int
) -> dict[str, float]:
    """Train alone from the round-1 prior (everyone's common start: Algorithm 1's random-site
    model, or the champion in a warm-started run) for ``rounds`` rounds of local epochs, and
    score on the site's validation split: what the site gets without this run's collaboration.
    The model is discarded."""
    _, start = fetch_prior(config, store, 1)
    params = {k: v.to(ready.device) for k, v in start.items()}
    for t in range(1, rounds + 1):
        params = Individual().local_update(ready.context, params, params, t).personal
    return score_params(ready.context, params).as_dict()


def evaluate(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> SiteEvaluation:
    """Score a tier-1 site's theta_k after the last round, and the final prior, on its data."""
    ready = prepare(config, site, rounds + 1, store)
    own = score_params(ready.context, ready.personal).as_dict()
    mean = score_params(ready.context, ready.prior).as_dict()
    local = local_baseline(config, store, ready, rounds)
    return _publish(config, store, SiteEvaluation(site, 1, own, mean, local))


def finetune(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> SiteEvaluation:
    """Tier 2: run the local MAP objective under the final prior for as many local epochs as a
    tier-1 site ran in the whole federation (rounds x epochs), keep the model, report scores.

    The site never contributes: its parameters and omega stay on its own disk.
    """
    ready = prepare(config, site, rounds + 1, store)
    tuned = ready
    for _ in range(rounds):  # the same budget as a tier-1 site: rounds x local epochs
        fitted = fit_site(config, site, rounds + 1, tuned)
        tuned = replace(tuned, personal=fitted.personal)
    keep_state(config, site, rounds + 1, fitted.personal)
    own = score_params(ready.context, fitted.personal).as_dict()
    mean = score_params(ready.context, ready.prior).as_dict()
    local = local_baseline(config, store, ready, rounds)
    return _publish(config, store, SiteEvaluation(site, 2, own, mean, local))
