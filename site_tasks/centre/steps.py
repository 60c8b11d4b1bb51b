"""The steps the coordinating centre runs, as the orchestrator calls them: each takes the
federation file and the run's name, does one idempotent piece of work, and returns small
metadata.

``aggregate_step`` is the centre's side of the rounds: the DAG calls it again and again (a sensor
poke); each call aggregates the current round once every site still in the run has committed its
update, so one task serves every round of a run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from site_tasks.centre import server
from site_tasks.runs import RoundNotReady, committed_rounds, configure, validation_passed
from site_tasks.storage import Keys

log = logging.getLogger("site_tasks")
NOTE_LIMIT = 1000
"""The most characters a DAG run's note holds (Airflow's ``dag_run_note.content``)."""


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
    from site_tasks.centre.equity import equity_summary, read_evaluations
    from site_tasks.centre.registry import register, tracking_uri

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


def _round_line(summary: Mapping[str, Any], members: int, quorum: int) -> str:
    """What a round's summary says: who counted, who was rejected or sent nothing, the quorum."""
    counted = len(summary.get("contributed", []))
    parts = [f"{counted} of {members} sites"]
    rejected = summary.get("rejected", {})
    if rejected:
        parts.append("rejected " + ", ".join(f"{s} ({r[:60]})" for s, r in rejected.items()))
    if summary.get("missing"):
        parts.append("missing " + ", ".join(summary["missing"]))
    met = counted >= quorum
    return ", ".join(parts) + ("; quorum met" if met else f"; **quorum {quorum} not met**")


def _rounds(lines: Sequence[tuple[int, str]]) -> list[str]:
    """Consecutive rounds that say the same, as one line: ``rounds 1-20: ...``."""
    grouped: list[tuple[int, int, str]] = []
    for t, line in lines:
        if grouped and grouped[-1][2] == line and grouped[-1][1] == t - 1:
            grouped[-1] = (grouped[-1][0], t, line)
        else:
            grouped.append((t, t, line))
    return [
        f"- round {a}: {line}" if a == b else f"- rounds {a}-{b}: {line}" for a, b, line in grouped
    ]


def _fit(head: Sequence[str], rounds: Sequence[str], tail: Sequence[str]) -> str:
    """head, rounds and tail as lines within NOTE_LIMIT: the rounds that do not fit give way to
    one line that counts them."""
    kept = list(rounds)
    while True:
        cut = len(rounds) - len(kept)
        more = [f"- ... {cut} more (rounds_sites.png in MLflow)"] if cut else []
        text = "\n".join([*head, *kept, *more, *tail])
        if len(text) <= NOTE_LIMIT or not kept:
            return text[:NOTE_LIMIT]
        kept.pop()


def _gain(value: float, metric: str) -> str:
    return f"{100 * value:+.1f} pp" if metric == "accuracy" else f"{value:+.3f}"


def run_note(
    path: Path, run: str, registration: Mapping[str, Any] | None, register_state: str | None
) -> str:
    """The note of a federation run (Markdown, at most NOTE_LIMIT characters): the sites of each
    round and its quorum decision (from the round summaries; rounds alike share a line), the
    gate's decision (``registration``: what ``register_run`` returned, None when register ended
    ``register_state`` without a result) and the equity of the sites' final evaluations."""
    from site_tasks.centre.equity import equity_summary, read_evaluations

    config, store = configure(path, run)
    keys = Keys.of(config)
    members = sum(1 for site in config.sites.values() if site.tier == 1)
    rounds = f"{config.rounds} round{'s' * (config.rounds != 1)}"
    head = [
        f"**fedmap-{config.name}**: {rounds}, quorum {config.min_sites} of {members} tier-1 sites"
    ]
    lines = []
    for t in range(1, config.rounds + 1):
        raw = store.get(keys.summary(t))
        if raw is None:
            lines.append((t, "not aggregated"))
            break
        lines.append((t, _round_line(json.loads(raw), members, config.min_sites)))
    if registration is not None and registration.get("alias"):
        tail = [
            f"- gate: `{registration['model']}` v{registration['prior_version']} -> "
            f"**{registration['alias']}** ({str(registration.get('reason', ''))[:200]})"
        ]
    elif register_state == "skipped":
        tail = ["- gate: not registered (no MLflow server)"]
    else:
        tail = [f"- gate: not registered (register {register_state or 'did not run'})"]
    fairness = equity_summary(config, read_evaluations(config, store))
    if fairness is not None:
        m, own, local = fairness.metric, fairness.fedmap, fairness.local
        gains = [g for g in own.gains.values() if math.isfinite(g)]
        mean = f"mean gain {_gain(statistics.fmean(gains), m)}, " if gains else ""
        tail.append(
            f"- equity ({m}, {len(own.scores)} sites): {mean}worst-served {own.worst_served} "
            f"{_gain(own.worst_served_gain, m)}, spread (std) {own.spread_std:.3f} "
            f"vs {local.spread_std:.3f} local-only"
        )
    return _fit(head, _rounds(lines), tail)


def inference_note(
    federation: str, sites: Sequence[str], results: Mapping[str, Mapping[str, Any]]
) -> str:
    """The note of an inference run: the model version each tier-3 site scored with and its
    counts (``results``: site -> what ``score_site`` returned; a site without one failed)."""
    used = sorted({f"`{r['model']}` v{r['version']}" for r in results.values()})
    head = [f"**fedmap-{federation} inference**: scored with {', '.join(used) or 'no model'}"]
    lines = []
    for site in sites:
        r = results.get(site)
        if r is None:
            lines.append(f"- {site}: no result (see its score log)")
            continue
        positive = r.get("predicted_positive")
        said = "" if positive is None else f", {positive} predicted positive"
        lines.append(f"- {site}: {r['n_scored']} rows with v{r['version']}{said}")
    return _fit(head, lines, [])


def publish_note(
    api_url: str,
    dag_id: str,
    run_id: str,
    note: str,
    login: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Set a DAG run's note through Airflow's public REST API (``PATCH
    /api/v2/dags/{dag_id}/dagRuns/{run_id}``): the Task SDK sets a note only on a run it
    triggers. The token comes from ``/auth/token``: POSTed credentials, or none where every user
    is admin (a local stack). Raises OSError when the API cannot be reached or refuses."""
    base = api_url.rstrip("/")

    def call(url: str, method: str, body: dict[str, Any] | None, token: str = "") -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")

    if login:
        grant = call(f"{base}/auth/token", "POST", {"username": login, "password": password})
    else:
        grant = call(f"{base}/auth/token", "GET", None)
    quoted = urllib.parse.quote(run_id, safe="")
    call(
        f"{base}/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns/{quoted}"
        "?update_mask=note",
        "PATCH",
        {"note": note[:NOTE_LIMIT]},
        str(grant["access_token"]),
    )
