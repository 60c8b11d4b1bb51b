"""The steps the coordinating centre runs, as the orchestrator calls them: each takes the
federation file and the run's name, does one idempotent piece of work, and returns small
metadata.

``aggregate_step`` is the centre's side of the rounds: the DAG calls it again and again (a sensor
poke); each call aggregates the current round once every site still in the run has committed its
update, so one task serves every round of a run.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from site_tasks.centre import server
from site_tasks.runs import RoundNotReady, committed_rounds, configure, validation_passed
from site_tasks.storage import Keys

log = logging.getLogger("site_tasks")


def start(path: Path, run: str) -> str:
    """Create the bucket if needed and write the prior of round 1: the registry's champion prior
    when MLflow is configured and has one, otherwise Algorithm 1's random-site initialisation."""
    from site_tasks.centre.registry import champion_prior, tracking_uri

    config, store = configure(path, run, granted=False)
    store.ensure_bucket()
    warm = champion_prior(config, store) if tracking_uri(config) else None
    return server.init(config, store, warm).sha256


@dataclass(frozen=True)
class AggregateStep:
    """What one call of ``aggregate_step`` found or did."""

    round: int
    """The round the run is in after this call (rounds + 1 once it is over)."""
    done: bool
    aggregated: int | None = None
    """The round aggregated by this call, if any."""
    weights: dict[str, float] = field(default_factory=dict)
    """That round's weights w_k."""
    waiting_for: tuple[str, ...] = ()
    """Sites still in the run whose update of the current round is not committed yet."""
    left_out: tuple[str, ...] = ()
    """Tier-1 sites out of the run: excluded at validation, or whose training task ended failed."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "done": self.done,
            "aggregated": self.aggregated,
            "weights": self.weights,
            "waiting_for": list(self.waiting_for),
            "left_out": list(self.left_out),
        }


def aggregate_step(
    path: Path, run: str, ended: Collection[str] = (), read_validation: bool = True
) -> AggregateStep:
    """Aggregate the current round when every tier-1 site still in the run has committed its
    update; otherwise report whom it waits for.

    A site is out of the run when its validation did not pass or ``ended`` names it (its training
    task finished without success: failed after its retries, or skipped). The quorum
    (``min_sites``) is enforced by ``server.aggregate``: below it the round fails naming the
    missing sites. Idempotent: the round is read from storage (the latest committed prior).
    ``read_validation=False``: ``ended`` already names the sites whose validation did not pass
    (the DAG knows it from the validate tasks' states), so no validation summary is read: at
    hundreds of sites that saves as many reads on every poke.
    """
    config, store = configure(path, run)
    t = committed_rounds(config, store)
    if t == 0:
        raise RoundNotReady(
            "round 1 cannot be aggregated: its prior is not committed; the start task is the cause"
        )
    members = [name for name, site in config.sites.items() if site.tier == 1]
    out = tuple(
        s
        for s in members
        if s in ended or (read_validation and validation_passed(config, store, s) is not True)
    )
    if t > config.rounds:
        return AggregateStep(t, True, left_out=out)
    keys = Keys.of(config)
    committed = {
        k.removeprefix(keys.updates(t)).removesuffix(".json")
        for k in store.list(keys.updates(t))
        if k.endswith(".json")
    }
    waiting = tuple(s for s in members if s not in out and s not in committed)
    if waiting:
        return AggregateStep(t, False, waiting_for=waiting, left_out=out)
    summary = server.aggregate(config, store, t)
    log.info(
        "round %d aggregated: %d update(s) accepted (%s); left out: %s; quorum %d met",
        t,
        len(summary.contributed),
        ", ".join(summary.contributed),
        ", ".join(out) or "none",
        config.min_sites,
    )
    return AggregateStep(t + 1, t == config.rounds, t, dict(summary.weights), left_out=out)


def code_version() -> str:
    """The git commit of this checkout, or $FEDMAP_CODE_VERSION where there is no git."""
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
