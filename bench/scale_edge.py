"""The round at scale on the real edge deployment: one run of a synthetic federation of N small
sites on ``site_tasks.local.edge`` (PostgreSQL, API server, scheduler, DAG processor, an S3
server and K edge workers serving all the sites' queues), the edge-side companion of
``bench/scale.py`` (which runs the same kind of federation with ``airflow dags test``).

``edge_round_times`` brings the deployment up on free ports, triggers one run through the REST
API, waits for it and reads its figures from PostgreSQL (task instances, ``task_reschedule``) and
the S3 server's folder (the round summaries' write times); it always brings everything down.

    python -m bench.scale_edge --sites 10 --rounds 3 --workers 2 [--out FILE]

prints one JSON line and a markdown table (``--out`` writes the table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from bench.scale import write_sites
from site_tasks.local.edge import Deployment, api, default_slots, down, pg_data, sql, up
from site_tasks.local.edge import wait_until as wait_for

REPO = Path(__file__).resolve().parents[1]
NAME = "scale_edge"
DAG = f"fedmap_{NAME}"
RUN_ID = "scale-edge-1"
ENV = {"FEDMAP_TRAIN_RETRIES": "0", "FEDMAP_AGGREGATE_POKE_S": "10"}
"""Set unless the environment sets them. No retries: a failed site task shows in the figures
instead of retrying after its back-off (the distributed test does the same). ``aggregate`` pokes
every 10 s, as ``train`` does, instead of edge.py's 2 s: on 2 loaded cores (load 5) the
LocalExecutor's "success" for one aggregate poke reached the scheduler 6 s after the poke ended,
when the next poke (same task instance and try, so the same executor key) was already running,
and the scheduler failed it ("task state changed externally"): the race of apache/airflow#71172
that the train sensor avoids with its 10 s, on the centre's executor too."""


def log(message: str) -> None:
    print(f"[scale_edge {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bucket(sites: int, rounds: int) -> str:
    return f"scale-edge-{sites}-{rounds}"


def write_federation(root: Path, sites: int, rounds: int) -> Path:
    """``sites`` small synthetic label-skew sites (100 training, 40 validation rows; the 10
    scenario sites reused in turn, as in ``bench/scale.py``), each on its own queue, storage
    through the deployment's ``fedmap_s3`` connection."""
    names = write_sites(root / "data", sites)
    body = {
        "name": NAME,
        "task": {"contract": "synthetic", "target": "label", "model": "mlp", "n_features": 30},
        "algorithm": {"rounds": rounds, "epochs": 1, "batch_size": 32, "lr": 0.01},
        "sites": {n: {"data": str(root / "data" / n), "queue": n} for n in names},
        "min_sites": max(1, sites // 2),
        "storage": {"bucket": bucket(sites, rounds), "connection": "fedmap_s3"},
        "device": "cpu",
        "state_dir": str(root / "site-state"),
    }
    path = root / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def run_state(d: Deployment) -> str:
    rows = sql(d, "select state from dag_run where dag_id = %s and run_id = %s", (DAG, RUN_ID))
    return str(rows[0][0]) if rows else "none"


def summary_time(d: Deployment, sites: int, rounds: int, t: int) -> float | None:
    """When round t's summary was written (read through the S3 server as the centre)."""
    from site_tasks.local.edge import centre_object
    from site_tasks.runs import run_name

    key = f"{NAME}/{run_name(RUN_ID)}/round-{t}/summary.json"
    found = centre_object(d, bucket(sites, rounds), key)
    return None if found is None else found[1]


def progress(d: Deployment, sites: int, rounds: int) -> str:
    rows = sql(
        d,
        "select task_id, coalesce(state, 'none'), count(*) from task_instance "
        "where dag_id = %s and run_id = %s group by 1, 2 order by 1, 2",
        (DAG, RUN_ID),
    )
    done = sum(summary_time(d, sites, rounds, t) is not None for t in range(1, rounds + 1))
    states = ", ".join(f"{t}:{s}={n}" for t, s, n in rows)
    return f"rounds aggregated {done}/{rounds}; {states}"


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def figures(d: Deployment, sites: int, rounds: int) -> dict[str, Any]:
    """Seconds per round (round 1 from ``start``'s end, then from one summary's write time to
    the next), the train task's queued->start latency (a sensor's task-instance row keeps its
    last poke), the gap from each reschedule's due time to the next poke's start, and the
    pokes of train and aggregate (reschedules + the final poke)."""
    (dag_run,) = sql(
        d,
        "select extract(epoch from queued_at), extract(epoch from start_date), "
        "extract(epoch from end_date) from dag_run where dag_id = %s and run_id = %s",
        (DAG, RUN_ID),
    )
    queued_at, _, end = (float(v) if v is not None else None for v in dag_run)
    tis = sql(
        d,
        "select id, task_id, map_index, coalesce(state, 'none'), "
        "extract(epoch from start_date), extract(epoch from end_date), "
        "extract(epoch from start_date - queued_dttm) "
        "from task_instance where dag_id = %s and run_id = %s",
        (DAG, RUN_ID),
    )
    start_end = next((r[5] for r in tis if r[1] == "start" and r[5] is not None), None)
    marks = [float(start_end)] if start_end is not None else []
    for t in range(1, rounds + 1):
        written = summary_time(d, sites, rounds, t)
        if written is None or not marks:
            break
        marks.append(written)
    per_round = [round(b - a, 2) for a, b in pairwise(marks)]
    states: dict[str, Counter[str]] = defaultdict(Counter)
    for _, task_id, _, state, *_ in tis:
        states[str(task_id)][str(state)] += 1
    latency: dict[str, list[float]] = defaultdict(list)
    for _, task_id, _, _, _, _, gap in tis:
        if gap is not None:
            latency[str(task_id)].append(float(gap))
    reschedules = sql(
        d,
        "select ti.task_id, r.ti_id, extract(epoch from r.start_date), "
        "extract(epoch from r.reschedule_date) from task_reschedule r "
        "join task_instance ti on ti.id = r.ti_id "
        "where ti.dag_id = %s and ti.run_id = %s order by r.ti_id, r.start_date",
        (DAG, RUN_ID),
    )
    by_ti: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for task_id, ti_id, began, due in reschedules:
        by_ti[(str(task_id), str(ti_id))].append((float(began), float(due)))
    # the reschedule's due time -> the next poke's start, within one task instance
    resumed: dict[str, list[float]] = defaultdict(list)
    for (task_id, _), done in by_ti.items():
        resumed[task_id] += [b[0] - a[1] for a, b in pairwise(done)]
    count = Counter(str(r[0]) for r in reschedules)

    def pokes(task_id: str) -> int:
        finals = sum(1 for r in tis if r[1] == task_id and r[3] in ("success", "failed"))
        return count[task_id] + finals

    return {
        "state": run_state(d),
        "run_db_s": round(end - queued_at, 1) if end and queued_at else None,
        "round_s": per_round,
        "round_mean_s": round(statistics.fmean(per_round), 2) if per_round else None,
        "train_queued_to_start_median_s": median(latency["train"]),
        "validate_queued_to_start_median_s": median(latency["validate"]),
        "train_reschedule_to_poke_median_s": median(resumed["train"]),
        "train_pokes": pokes("train"),
        "train_reschedules": count["train"],
        "aggregate_pokes": pokes("aggregate"),
        "task_states": {t: dict(c) for t, c in sorted(states.items())},
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Variables the spawned processes inherit (``_spawn`` passes ``os.environ`` on)."""
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # no MLflow: register skips
    for name, value in values.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def default_timeout(sites: int, rounds: int) -> float:
    """Generous: 5 minutes, plus 20 s for every site-round (2 loaded cores)."""
    return 300.0 + 20.0 * sites * rounds


def edge_round_times(
    sites: int, rounds: int, workers: int, state: Path, timeout: float | None = None
) -> dict[str, Any]:
    """One run of a ``sites`` x ``rounds`` synthetic federation on the edge deployment with
    ``workers`` edge workers; its figures. The deployment lives under ``state`` (emptied first)
    and is brought down whatever happens."""
    root = (state / f"{sites}x{rounds}-w{workers}").resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    path = write_federation(root, sites, rounds)
    d = Deployment.on_free_ports(root / "deployment")
    limit = timeout if timeout is not None else default_timeout(sites, rounds)
    result: dict[str, Any] = {
        "sites": sites,
        "rounds": rounds,
        "workers": workers,
        "slots": default_slots(sites),
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    with environment(ENV):
        try:
            began = time.monotonic()
            log(f"bringing up {sites} sites on {workers} workers under {root}")
            pool = up(path, d, workers)
            wait_for(
                f"{len(pool)} edge workers registered",
                lambda: (
                    len(sql(d, "select 1 from edge_worker where state <> 'offline'")) >= len(pool)
                ),
                180,
            )
            wait_for(
                "the DAG parsed", lambda: sql(d, "select 1 from dag where dag_id = %s", (DAG,)), 180
            )
            result["up_s"] = round(time.monotonic() - began, 1)
            log(f"up in {result['up_s']} s ({len(pool)} workers); triggering {DAG}")
            api(d, "PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
            triggered = time.monotonic()
            api(
                d,
                "POST",
                f"/api/v2/dags/{DAG}/dagRuns",
                {"dag_run_id": RUN_ID, "logical_date": None},
            )
            deadline, shown = triggered + limit, 0.0
            while (current := run_state(d)) not in ("success", "failed"):
                now = time.monotonic()
                if now > deadline:
                    log(f"timed out after {limit:.0f} s: {progress(d, sites, rounds)}")
                    break
                if now - shown >= 30:
                    log(f"{now - triggered:.0f} s, run {current}: {progress(d, sites, rounds)}")
                    shown = now
                time.sleep(2)
            result["run_wall_s"] = round(time.monotonic() - triggered, 1)
            result["timed_out"] = current not in ("success", "failed")
            result.update(figures(d, sites, rounds))
            log(f"run {result['state']} in {result['run_wall_s']} s")
        finally:
            result["load_after"] = [round(x, 2) for x in os.getloadavg()]
            log(f"stopped: {', '.join(down(d)) or 'nothing'}")
            shutil.rmtree(pg_data(d).parent, ignore_errors=True)  # outside state when root
    return result


def _s(value: Any) -> str:
    return "-" if value is None else f"{value} s"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    out = [
        "| sites x rounds | edge workers (slots) | run wall | per round | train queued->start "
        "(median) | reschedule due->next poke (median) | train pokes (reschedules) | "
        "aggregate pokes | state | load avg before / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rounds = ", ".join(f"{x:.1f}" for x in r.get("round_s", []))
        out.append(
            f"| {r['sites']} x {r['rounds']} | {r['workers']} ({r['slots']}) | "
            f"{_s(r.get('run_wall_s'))} | {_s(r.get('round_mean_s'))} ({rounds}) | "
            f"{_s(r.get('train_queued_to_start_median_s'))} | "
            f"{_s(r.get('train_reschedule_to_poke_median_s'))} | "
            f"{r.get('train_pokes', '-')} ({r.get('train_reschedules', '-')}) | "
            f"{r.get('aggregate_pokes', '-')} | {r.get('state', '-')} | "
            f"{r['load_before'][0]} / {r['load_after'][0]} |"
        )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale_edge",
        description="Round times of one run of a synthetic federation on the local edge "
        "deployment (site_tasks.local.edge) with K edge workers.",
    )
    parser.add_argument("--sites", type=int, default=10, help="synthetic sites (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--workers", type=int, default=2, help="edge workers (2)")
    parser.add_argument(
        "--timeout", type=float, help="seconds to wait for the run (300 + 20 per site-round)"
    )
    parser.add_argument("--state", type=Path, default=REPO / ".state" / "bench-scale-edge")
    parser.add_argument("--out", type=Path, help="write the markdown table to this file")
    args = parser.parse_args(argv)
    row = edge_round_times(args.sites, args.rounds, args.workers, args.state, args.timeout)
    print(json.dumps(row), flush=True)
    table = markdown([row])
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0 if row.get("state") == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
