"""The steps a hospital runs, as the orchestrator calls them: each takes the federation file, the
run's name and the site, does one idempotent piece of work, and returns small metadata.

``train_step`` is the site's side of the rounds: the DAG calls it again and again (a sensor
poke) and each call trains at most one round, the first the site has not trained yet, once its
prior is committed. So one task per site serves every round of a run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from site_tasks.federation import FederationConfig
from site_tasks.runs import SiteExcluded, configure
from site_tasks.site import train as training
from site_tasks.site.validate import validate
from site_tasks.storage import Keys

log = logging.getLogger("site_tasks")


def validate_site(path: Path, run: str, site: str) -> int:
    """Validate one site; raise SiteExcluded with every broken rule when it fails."""
    config, store = configure(path, run)
    summary = validate(config, site, store)
    if not summary.success:
        raise SiteExcluded("; ".join(summary.errors))
    return sum(summary.rows.values())


def require_included(config: FederationConfig, site: str) -> None:
    """SiteExcluded unless the site's own record of this run's validation says it passed (the
    record on its disk, never the copy in storage)."""
    from site_tasks.site.digests import NotValidatedError, read_record

    try:
        record = read_record(config, site)
    except NotValidatedError as exc:
        raise SiteExcluded(str(exc)) from exc
    if not record.success:
        raise SiteExcluded("; ".join(record.errors))


@dataclass(frozen=True)
class TrainStep:
    """Where a site stands after one call of ``train_step``."""

    trained: int | None
    """The round trained by this call, if any."""
    next_round: int
    """The first round the site has not trained (rounds + 1 once it trained them all)."""
    done: bool
    """Every round trained and the last round's prior aggregated: nothing left for this site."""
    idle_s: float = 0.0
    """How long the site has waited since it trained its last round (0 before round 1)."""


def train_step(
    path: Path, run: str, site: str, device: str | None = None, wait_s: float = 0.0
) -> TrainStep:
    """Train the site's next round if its prior is committed; otherwise report that it waits.

    The rounds a site has trained are the θ_k it kept on its own disk (``training.state_path``), so the
    step needs no storage listing. ``wait_s``: how long to keep polling for the next prior
    within this call before returning (0 in ``airflow dags test``, which runs one task at a
    time; a few seconds on an edge worker, to save a task launch per poll).
    """
    config, store = configure(path, run)
    require_included(config, site)
    keys = Keys.of(config)
    t = 1
    while t <= config.rounds and training.state_path(config, site, t).is_file():
        t += 1
    deadline = time.monotonic() + wait_s
    last = training.state_path(config, site, t - 1)
    while True:
        idle = max(0.0, time.time() - last.stat().st_mtime) if t > 1 else 0.0
        if t > config.rounds:
            finished = store.get(keys.prior(config.rounds + 1)[1]) is not None
            return TrainStep(None, t, finished, idle)
        if store.get(keys.prior(t)[1]) is not None:
            training.train(config, site, t, store, device)
            done = t == config.rounds and store.get(keys.prior(t + 1)[1]) is not None
            return TrainStep(t, t + 1, done)
        if time.monotonic() >= deadline:
            return TrainStep(None, t, False, idle)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


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


def finalise_site(path: Path, run: str, site: str) -> float:
    """After the last round: evaluate a tier-1 site, fine-tune a tier-2 one. A site excluded at
    validation raises SiteExcluded."""
    config, _ = configure(path, run)
    require_included(config, site)
    if config.site(site).tier == 1:
        return evaluate_site(path, run, site)
    return finetune_site(path, run, site)


def score_site(path: Path, run: str, site: str) -> dict[str, int | str | None]:
    """Tier 3: validate reference.csv and score.csv (once per inference run; a broken file fails
    the task with the contract's errors), then score score.csv with the champion prior; return
    the counts."""
    from site_tasks.site.contracts import require_valid
    from site_tasks.site.score import score_site as score

    config, store = configure(path, run)  # the centre made the bucket; a site may not
    require_valid(validate(config, site, store))
    summary = score(config, site, store)
    return {
        "model": summary.model,
        "version": summary.version,
        "rows": summary.rows,
        "n_scored": summary.n_scored,
        "imputed": summary.imputed,
        "predicted_positive": summary.predicted_positive,
    }
