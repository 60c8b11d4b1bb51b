"""What every step of a federation run shares, on either side: the run's storage-safe name, the
federation file read for that run, and the two ways a step declines to go on.

The steps themselves are ``site_tasks.site.steps`` (what a hospital runs) and
``site_tasks.centre.steps`` (what the coordinating centre runs). ``dags/`` wraps each in an
Airflow task; nothing here imports Airflow.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from fedmap.messages import Manifest
from site_tasks import trust
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.storage import Keys, ObjectStore, S3Store


class SiteExcluded(RuntimeError):
    """A site whose data breaks the contract sits this run out; the message says why."""


class RoundNotReady(RuntimeError):
    """The round has no committed prior: an earlier round did not finish (that task failed)."""


def run_name(run_id: str) -> str:
    """An orchestrator's run id made into a storage-safe name (letters, digits, '.', '_', '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    return cleaned[:63] or "run"


def configure(path: Path, run: str, granted: bool = True) -> tuple[FederationConfig, S3Store]:
    """The federation file read for this run, and its store. Under DP, the run's rounds are
    those the centre granted it in its signed round-1 prior (``site_tasks.privacy.plan_run``):
    fewer than the file's when the budget ends first (``granted=False``: the file's, for the step
    that makes the grant, before the bucket may exist)."""
    config = replace(load_federation(path), run=run_name(run))
    store = S3Store(config.storage)
    if granted and config.federation.privacy.dp:
        config = replace(config, rounds=granted_rounds(config, store))
    return config, store


def granted_rounds(config: FederationConfig, store: ObjectStore) -> int:
    """The rounds the round-1 prior grants this run (the file's until that prior exists)."""
    raw = store.get(Keys.of(config).prior(1)[1])
    if raw is None:
        return config.rounds
    manifest = Manifest.from_json(raw)
    trust.verify_prior(config, manifest)  # the centre's grant, not a forgery
    grant = manifest.extra.get("privacy", {})
    return min(config.rounds, int(grant.get("rounds", config.rounds)))


def validation_passed(config: FederationConfig, store: ObjectStore, site: str) -> bool | None:
    """Whether the site's validation summary of this run says its data met the contract; None
    when the site uploaded none (its validate task never ran or failed before uploading)."""
    raw = store.get(Keys.of(config).validation(site))
    if raw is None:
        return None
    return bool(json.loads(raw).get("success"))


def committed_rounds(config: FederationConfig, store: ObjectStore) -> int:
    """The latest round t whose prior is committed (its manifest written), 0 when none is: the
    run is in round t, and finished once t = rounds + 1."""
    keys, t = Keys.of(config), 0
    while t <= config.rounds and store.get(keys.prior(t + 1)[1]) is not None:
        t += 1
    return t
