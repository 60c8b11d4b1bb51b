"""``site-task validate``: check the site's own files against the federation's data contract and
upload the summary (success and counts per expectation, never a row value)."""

from __future__ import annotations

import logging

from site_tasks.federation import FederationConfig
from site_tasks.site.contracts import ValidationSummary, scoring_contract, validate_site
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")


def validate(config: FederationConfig, site: str, store: ObjectStore) -> ValidationSummary:
    """Validate, upload ``<federation>/<run>/validation/<site>.json`` and return the summary.

    A failing summary is uploaded too, so the coordinating centre sees which rule failed. A tier-3
    site checks ``reference.csv`` and ``score.csv`` (features only) instead of its splits.
    """
    spec = config.site(site)
    contract = scoring_contract(config.contract) if spec.tier == 3 else config.contract
    summary = validate_site(site, spec.data, contract)
    key = Keys.of(config).validation(site)
    store.put(key, summary.to_json().encode())
    if summary.success:
        log.info("%s: data meets the %s contract -> %s", site, config.contract, key)
    else:
        for error in summary.errors:
            log.error("%s", error)
    return summary
