"""A real multi-process federation: PostgreSQL, the Airflow API server, scheduler and DAG
processor, an S3 server with one key pair per party, and one edge worker process per site.

Run with ``pytest -m distributed``. The DAG's site tasks (``validate``, ``train``, ``finalise``)
are mapped over the sites and routed by the centre's cluster policy: map index i is ``SITES[i]``
and must run on that site's queue and worker. A triggered run completes with every site task
run by its own worker (Airflow's task instances, edge3's jobs and the round summaries say so); a
site's train task cleared after the run goes back to the same site's queue; a worker stopped
mid-run gets its site dropped by the quorum while the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from site_tasks.local.edge import (
    Deployment,
    Worker,
    api,
    down,
    pg_data,
    sql,
    start_worker,
    up,
)
from site_tasks.local.edge import wait_until as wait
from site_tasks.local.stack import BIN, stop

pytestmark = pytest.mark.distributed
SITES = ("site-01", "site-02", "site-03")
"""Every site is tier 1, so map index i of validate, train and finalise is SITES[i]."""
ROUNDS = 3
DAG = "fedmap_edge"
SITE_TASKS = ("validate", "train", "finalise")
CENTRE_TASKS = ("start", "aggregate", "register", "release")


def write_federation(root: Path) -> Path:
    from fedmap.data import write_site
    from fedmap.synthetic import generate

    for split in generate("label-skew", 0)[: len(SITES)]:
        small = replace(
            split,
            x_train=split.x_train[:200],
            y_train=split.y_train[:200],
            x_val=split.x_val[:80],
            y_val=split.y_val[:80],
        )
        write_site(small, root / "hospitals")
    body = {
        "name": "edge",
        "task": {"contract": "synthetic"},
        "algorithm": {"rounds": ROUNDS, "epochs": 1, "batch_size": 32, "lr": 0.01},
        "sites": {s: {"data": str(root / "hospitals" / s), "queue": s} for s in SITES},
        "min_sites": 2,
        "storage": {"bucket": "fedmap-edge", "connection": "fedmap_s3"},
        "device": "cpu",
        "state_dir": str(root / "site-state"),
    }
    path = root / "edge.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def airflow(d: Deployment, *args: str) -> str:
    env = {**os.environ, **d.centre_env()}
    done = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Path]]:
    root = tmp_path_factory.mktemp("edge")
    path = write_federation(root)
    d = Deployment.on_free_ports(root / "deployment", queued_timeout_s=20)
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update({"FEDMAP_TRAIN_RETRIES": "0", "FEDMAP_TRAIN_TIMEOUT_MIN": "5"})
    try:
        workers = up(path, d)
        assert workers == [Worker(s, (s,)) for s in SITES]
        wait(
            "3 edge workers registered",
            lambda: (
                len(sql(d, "select worker_name from edge_worker where state <> 'offline'")) == 3
            ),
            120,
        )
        wait("the DAG parsed", lambda: sql(d, f"select 1 from dag where dag_id = '{DAG}'"), 120)
        airflow(d, "dags", "unpause", DAG)
        yield d, path
    finally:
        down(d)
        shutil.rmtree(pg_data(d).parent, ignore_errors=True)  # outside tmp when run as root
        os.environ.clear()
        os.environ.update(saved)


def trigger(d: Deployment, run_id: str) -> None:
    airflow(d, "dags", "trigger", DAG, "--run-id", run_id)


def run_state(d: Deployment, run_id: str) -> str:
    rows = sql(d, f"select state from dag_run where run_id = '{run_id}'")
    return str(rows[0][0]) if rows else "none"


@dataclass(frozen=True)
class TI:
    state: str
    executor: str
    hostname: str
    queue: str
    try_number: int


def task_states(d: Deployment, run_id: str) -> dict[tuple[str, int], TI]:
    """This run's task instances by (task_id, map_index); -1 for an unmapped task."""
    rows = sql(
        d,
        "select task_id, map_index, state, executor, hostname, queue, try_number "
        f"from task_instance where run_id = '{run_id}'",
    )
    return {
        (str(t), int(i)): TI(str(s), str(e), str(h), str(q), int(n)) for t, i, s, e, h, q, n in rows
    }


def summary_object(d: Deployment, run_id: str, t: int) -> tuple[bytes, float] | None:
    """Round t's summary and when it was written, read through the S3 server as the centre."""
    from site_tasks.local.edge import centre_object
    from site_tasks.runs import run_name

    return centre_object(d, "fedmap-edge", f"edge/{run_name(run_id)}/round-{t}/summary.json")


def summary(d: Deployment, run_id: str, t: int) -> dict[str, Any]:
    found = summary_object(d, run_id, t)
    assert found is not None, f"no summary of round {t} in {run_id}"
    return dict(json.loads(found[0]))


def mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f} s (n={len(values)})" if values else "n/a"


def figures(d: Deployment, run_id: str) -> str:
    """Seconds per round (from the round summaries' write times, round 1 from ``start``'s end),
    queued->start latency per task id (a sensor's row is its last poke) and each sensor's number
    of reschedules (pokes that found nothing to finish)."""
    (start_end,) = sql(
        d,
        "select extract(epoch from end_date) from task_instance "
        f"where run_id = '{run_id}' and task_id = 'start'",
    )[0]
    ends = [(summary_object(d, run_id, t) or (b"", math.nan))[1] for t in range(1, ROUNDS + 1)]
    rounds = [b - a for a, b in pairwise([float(start_end), *ends])]
    rows = sql(
        d,
        "select task_id, extract(epoch from start_date - queued_dttm) from task_instance "
        f"where run_id = '{run_id}' and queued_dttm is not null order by task_id",
    )
    latency: dict[str, list[float]] = {}
    for task_id, gap in rows:
        latency.setdefault(str(task_id), []).append(float(gap))
    pokes = sql(
        d,
        "select ti.task_id, count(*) from task_reschedule r "
        f"join task_instance ti on ti.id = r.ti_id where ti.run_id = '{run_id}' group by 1",
    )
    return (
        f"rounds: {', '.join(f'{r:.1f}' for r in rounds)} s; queued->start: "
        + ", ".join(f"{t} {mean(v)}" for t, v in latency.items())
        + "; reschedules: "
        + ", ".join(f"{t} {n}" for t, n in pokes)
    )


def test_each_site_runs_on_its_own_worker(federation: tuple[Deployment, Path]) -> None:
    d, _ = federation
    began = time.monotonic()
    trigger(d, "edge-run-1")
    wait("run 1 finished", lambda: run_state(d, "edge-run-1") in ("success", "failed"), 900)
    seconds = time.monotonic() - began
    # edge3 purges a successful job about 5 minutes after it ends: read them first
    jobs = sql(
        d,
        "select task_id, map_index, queue, edge_worker, state from edge_job "
        "where run_id = 'edge-run-1'",
    )
    states = task_states(d, "edge-run-1")
    assert run_state(d, "edge-run-1") == "success", states
    for task in SITE_TASKS:  # Airflow records the edge worker (--edge-hostname) that ran each
        for i, site in enumerate(SITES):
            ti = states[(task, i)]
            assert (ti.state, ti.executor, ti.hostname, ti.queue) == (
                "success",
                "EdgeExecutor",
                site,
                site,
            ), (task, i, ti)
    trains = [j for j in jobs if j[0] == "train"]
    assert sorted(int(j[1]) for j in trains) == list(range(len(SITES))), jobs
    for _, index, queue, worker, _ in trains:
        assert queue == worker == SITES[int(index)], jobs
    for task in CENTRE_TASKS:  # the centre's own, unmapped
        ti = states[(task, -1)]
        assert ti.executor != "EdgeExecutor" and ti.hostname not in SITES, (task, ti)
        assert ti.state in ("success", "skipped"), (task, ti)  # no MLflow: register skips
    assert states[("aggregate", -1)].state == "success"
    for t in range(1, ROUNDS + 1):
        assert summary(d, "edge-run-1", t)["workers"] == {s: s for s in SITES}
    # under the real scheduler, summarise set the run's note through the REST API itself
    assert states[("summarise", -1)].state == "success"
    (note,) = sql(
        d,
        "select n.content from dag_run_note n join dag_run r on r.id = n.dag_run_id "
        "where r.run_id = 'edge-run-1'",
    )[0]
    assert f": {ROUNDS} round" in str(note) and "quorum" in str(note), note
    assert "gate: not registered (no MLflow server)" in str(note), note
    print(
        f"\nedge run: {len(SITES)} sites x {ROUNDS} rounds, {len(states)} task instances, "
        f"{seconds:.1f} s trigger to success; {figures(d, 'edge-run-1')}"
    )


def test_a_cleared_site_task_stays_on_its_queue(federation: tuple[Deployment, Path]) -> None:
    d, _ = federation
    assert run_state(d, "edge-run-1") == "success"
    cleared = api(
        d,
        "POST",
        f"/api/v2/dags/{DAG}/clearTaskInstances",
        {
            "dry_run": False,
            "only_failed": False,
            "dag_run_id": "edge-run-1",
            "task_ids": [["train", 1]],
        },
    )
    assert [(t["task_id"], t["map_index"]) for t in cleared["task_instances"]] == [("train", 1)]

    def retried() -> bool:
        ti = task_states(d, "edge-run-1")[("train", 1)]
        return ti.try_number == 2 and ti.state in ("success", "failed")

    wait("train [site-02] ran again", retried, 300)
    ti = task_states(d, "edge-run-1")[("train", 1)]
    assert ti == TI("success", "EdgeExecutor", "site-02", "site-02", 2), ti
    history = sql(
        d,
        "select try_number, queue, hostname from task_instance_history "
        "where run_id = 'edge-run-1' and task_id = 'train' and map_index = 1",
    )
    assert history and all(q == "site-02" for _, q, _ in history), history
    wait("run 1 finished again", lambda: run_state(d, "edge-run-1") == "success", 120)


@pytest.mark.exhaustive
def test_a_stopped_worker_is_dropped_by_the_quorum(federation: tuple[Deployment, Path]) -> None:
    d, _ = federation
    trigger(d, "edge-run-2")
    wait(  # site-03 has sent its round-1 update: it is part of this run
        "round 1 aggregated", lambda: summary_object(d, "edge-run-2", 1) is not None, 600
    )
    assert stop(d.stack, "worker-site-03", timeout=1)  # the hospital's machine goes away
    try:
        wait("run 2 finished", lambda: run_state(d, "edge-run-2") in ("success", "failed"), 600)
        states = task_states(d, "edge-run-2")
        assert run_state(d, "edge-run-2") == "success", states
        ti = states[("train", 2)]
        assert (ti.state, ti.queue) == ("failed", "site-03"), ti
        assert states[("aggregate", -1)].state == "success"
        assert summary(d, "edge-run-2", 1)["contributed"] == list(SITES)
        # the worker may send round 2 in the moment before it stops; never the last round
        for t in range(2, ROUNDS + 1):
            later = summary(d, "edge-run-2", t)
            assert later["missing"] in ([], ["site-03"]), (t, later)
            assert later["contributed"] == [s for s in SITES if s not in later["missing"]]
        last = summary(d, "edge-run-2", ROUNDS)
        assert last["contributed"] == ["site-01", "site-02"]
        assert last["missing"] == ["site-03"]
        for i, site in enumerate(SITES[:2]):  # the others went on on their own workers
            assert states[("train", i)] == TI("success", "EdgeExecutor", site, site, 1)
    finally:
        start_worker(d, Worker("site-03", ("site-03",)), len(SITES))
