"""``site-task validate``: check the site's own files against the federation's data contract,
keep the summary at the site and upload it (success and counts per expectation, and a SHA-256
per file, never a row value).

This is the run's only Great Expectations check of the site: train, evaluate, finetune and
tier-3 score then check the files' digests against the site's own record
(``site_tasks.site.digests``).
"""

from __future__ import annotations

import logging

from site_tasks import trust
from site_tasks.federation import FederationConfig
from site_tasks.site.contracts import ValidationSummary, validate_site
from site_tasks.site.digests import keep_record, site_contract
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")


def report(summary: ValidationSummary) -> str:
    """The summary as a person reads it: the verdict, rows per file, and each broken rule."""
    verdict = "meets" if summary.success else "does NOT meet"
    rows = ", ".join(f"{name} {n} rows" for name, n in summary.rows.items()) or "no rows read"
    lines = [f"{summary.site}: data {verdict} the {summary.contract!r} contract ({rows})"]
    lines += [f"  {error}" for error in summary.errors]
    return "\n".join(lines)


def check_locally(config: FederationConfig, site: str) -> ValidationSummary:
    """Validate the site's files and nothing more: no record is kept and nothing is uploaded.
    What a hospital runs before it joins, on a federation file that may have no ``storage``."""
    return validate_site(site, config.site(site).data, site_contract(config, site))


def validate(config: FederationConfig, site: str, store: ObjectStore) -> ValidationSummary:
    """Validate, keep the summary at the site (``digests.record_path``), upload
    ``<federation>/<run>/validation/<site>.json`` and return the summary.

    A failing summary is kept and uploaded too: the coordinating centre sees which rule failed,
    and the site's later tasks of the run refuse to start. A tier-3 site checks ``reference.csv``
    and ``score.csv`` (features only) instead of its splits.
    """
    summary = validate_site(site, config.site(site).data, site_contract(config, site))
    keep_record(config, site, summary)
    key = Keys.of(config).validation(site)
    # a site may validate again in the run (fixed data): its own report, replaceable by it alone
    trust.audited(config, site, store).put(key, summary.to_json().encode(), once=False)
    if summary.success:
        log.info("%s: data meets the %s contract -> %s", site, config.contract, key)
    else:
        for error in summary.errors:
            log.error("%s", error)
    return summary
