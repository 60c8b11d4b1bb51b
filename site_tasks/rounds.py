"""The steps of one federation run as the orchestrator calls them: each takes the federation
file and the run's name, does one idempotent piece of work, and returns small metadata.

``dags/fedmap_federation.py`` wraps each in an Airflow task; nothing here imports Airflow.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from site_tasks.centre import server
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.site.train import train
from site_tasks.site.validate import validate
from site_tasks.storage import S3Store

log = logging.getLogger("site_tasks")


class SiteExcluded(RuntimeError):
    """A site whose data breaks the contract sits this run out; the message says why."""


class RoundNotReady(RuntimeError):
    """The round has no committed prior: an earlier round did not finish (that task failed)."""


def run_name(run_id: str) -> str:
    """An orchestrator's run id made into a storage-safe name (letters, digits, '.', '_', '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    return cleaned[:63] or "run"


def configure(path: Path, run: str) -> tuple[FederationConfig, S3Store]:
    config = replace(load_federation(path), run=run_name(run))
    return config, S3Store(config.storage)


def validate_site(path: Path, run: str, site: str) -> int:
    """Validate one site; raise SiteExcluded with every broken rule when it fails."""
    config, store = configure(path, run)
    summary = validate(config, site, store)
    if not summary.success:
        raise SiteExcluded("; ".join(summary.errors))
    return sum(summary.rows.values())


def start(path: Path, run: str) -> str:
    """Create the bucket if needed and write the prior of round 1: the registry's champion prior
    when MLflow is configured and has one, otherwise Algorithm 1's random-site initialisation."""
    from site_tasks.centre.registry import champion_prior, tracking_uri

    config, store = configure(path, run)
    store.ensure_bucket()
    warm = champion_prior(config, store) if tracking_uri(config) else None
    return server.init(config, store, warm).sha256


def train_site(path: Path, run: str, site: str, round_: int, device: str | None = None) -> str:
    config, store = configure(path, run)
    return train(config, site, round_, store, device).manifest.sha256


def aggregate(path: Path, run: str, round_: int) -> dict[str, float]:
    """Aggregate the round under the quorum; return each contributing site's weight w_k."""
    from site_tasks.site.train import PriorUnavailable, fetch_prior

    config, store = configure(path, run)
    try:
        fetch_prior(config, store, round_)
    except PriorUnavailable as exc:
        raise RoundNotReady(
            f"round {round_} cannot be aggregated: {exc}; the earlier failed task is the cause"
        ) from exc
    return dict(server.aggregate(config, store, round_).weights)


def evaluate_site(path: Path, run: str, site: str) -> float:
    """Score a tier-1 site's own model and the final prior; return its personalised primary
    metric (accuracy, or the C-index for survival)."""
    from site_tasks.site.finalise import evaluate

    config, store = configure(path, run)
    return evaluate(config, store, site, config.rounds).primary


def finetune_site(path: Path, run: str, site: str) -> float:
    """Tier 2: fine-tune the final prior locally; return the fine-tuned model's primary metric."""
    from site_tasks.site.finalise import finetune

    config, store = configure(path, run)
    return finetune(config, store, site, config.rounds).primary


def score_site(path: Path, run: str, site: str) -> dict[str, int | str | None]:
    """Tier 3: score the site's score.csv with the champion prior; return the counts."""
    from site_tasks.site.score import score_site as score

    config, store = configure(path, run)  # the centre made the bucket; a site may not
    summary = score(config, site, store)
    return {
        "model": summary.model,
        "version": summary.version,
        "rows": summary.rows,
        "predicted_positive": summary.predicted_positive,
    }


def code_version() -> str:
    """The git commit of this checkout, or $FEDMAP_CODE_VERSION where there is no git."""
    import os
    import subprocess

    if os.environ.get("FEDMAP_CODE_VERSION"):
        return os.environ["FEDMAP_CODE_VERSION"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def register_run(path: Path, run: str, tolerance: float = 0.0) -> dict[str, Any] | None:
    """Log the run to MLflow, register its models, apply the gate; None without a server.

    The result holds the equity summary (``equity``: each site's gain over its local model, the
    worst-served site and its gain, the spread of the primary metric across sites). Without a
    server the summary still goes to the log."""
    from site_tasks.centre.registry import register, tracking_uri
    from site_tasks.site.finalise import equity_summary, read_evaluations
    from site_tasks.storage import Keys

    config, store = configure(path, run)
    if store.get(Keys.of(config).prior(config.rounds + 1)[1]) is None:
        # fail (not skip): a run whose last round never finished must not end "success"
        raise RoundNotReady(
            f"round {config.rounds} did not finish (no final prior): nothing is registered; the "
            "earlier failed task is the cause"
        )
    if tracking_uri(config) is None:
        fairness = equity_summary(config, read_evaluations(config, store))
        if fairness is not None:
            log.info("equity of the run (%s):\n%s", fairness.metric, fairness.markdown)
        return None
    result = register(config, store, run, code_version(), tolerance)
    return {
        "model": result.prior_model,
        "prior_version": result.prior_version,
        "alias": result.alias,
        "reason": result.reason,
        **{f"site_version.{site}": v for site, v in result.site_versions.items()},
        "equity": result.equity,
    }
