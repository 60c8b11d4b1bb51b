"""A real multi-process federation: PostgreSQL, the Airflow API server, scheduler and DAG
processor, an S3 server with one key pair per party, and one edge worker process per site.

Run with ``pytest -m distributed``. A triggered run completes with every site task run by its own
worker (the round summaries say which); a worker stopped mid-run gets its site dropped by the
quorum while the run goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from site_tasks.local.edge import Deployment, down, pg_data, start_worker, up
from site_tasks.local.stack import BIN, stop

pytestmark = pytest.mark.distributed
SITES = ("site-01", "site-02", "site-03")
DAG = "fedmap_edge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        "algorithm": {"rounds": 2, "epochs": 1, "batch_size": 32, "lr": 0.01},
        "sites": {s: {"data": str(root / "hospitals" / s), "queue": s} for s in SITES},
        "min_sites": 2,
        "storage": {"bucket": "fedmap-edge", "connection": "fedmap_s3"},
        "device": "cpu",
        "state_dir": str(root / "site-state"),
    }
    path = root / "edge.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def sql(d: Deployment, query: str) -> list[tuple[Any, ...]]:
    import psycopg2  # type: ignore[import-untyped]

    connection = psycopg2.connect(
        host="127.0.0.1", port=d.pg_port, user="postgres", dbname="airflow"
    )
    try:
        with connection.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        connection.close()


def wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(1)


def airflow(d: Deployment, *args: str) -> str:
    env = {**os.environ, **d.centre_env()}
    done = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Path]]:
    root = tmp_path_factory.mktemp("edge")
    path = write_federation(root)
    d = Deployment(
        root / "deployment",
        api_port=free_port(),
        pg_port=free_port(),
        s3_port=free_port(),
        log_port=free_port(),
        queued_timeout_s=20,
    )
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update({"FEDMAP_TRAIN_RETRIES": "0", "FEDMAP_TRAIN_TIMEOUT_MIN": "5"})
    try:
        up(path, d)
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


def task_states(d: Deployment, run_id: str) -> dict[str, tuple[str, str, str]]:
    rows = sql(
        d,
        f"select task_id, state, executor, hostname from task_instance where run_id = '{run_id}'",
    )
    return {str(t): (str(s), str(e), str(h)) for t, s, e, h in rows}


def summary(d: Deployment, run_id: str, t: int) -> dict[str, Any]:
    from site_tasks.rounds import run_name

    key = d.state / "s3" / "fedmap-edge" / "edge" / run_name(run_id) / f"round-{t}" / "summary.json"
    return dict(json.loads(key.read_text()))


def test_each_site_runs_on_its_own_worker(federation: tuple[Deployment, Path]) -> None:
    d, _ = federation
    began = time.monotonic()
    trigger(d, "edge-run-1")
    wait("run 1 finished", lambda: run_state(d, "edge-run-1") in ("success", "failed"), 420)
    seconds = time.monotonic() - began
    states = task_states(d, "edge-run-1")
    assert run_state(d, "edge-run-1") == "success", states
    for site in SITES:  # Airflow records the edge worker (--edge-hostname) that ran each
        for task in (f"validate.{site}", f"round_1.train_{site}", f"finalise.evaluate_{site}"):
            assert states[task] == ("success", "EdgeExecutor", site), (task, states[task])
    for task in ("start", "round_1.aggregate", "round_2.aggregate"):  # the centre's own
        state, executor, host = states[task]
        assert state == "success" and executor != "EdgeExecutor" and host not in SITES
    for t in (1, 2):
        assert summary(d, "edge-run-1", t)["workers"] == {s: s for s in SITES}
    # figures for docs/deploy.md: queue-to-start latency per executor, and time per round
    rows = sql(
        d,
        "select task_id, executor, extract(epoch from start_date - queued_dttm), "
        "extract(epoch from end_date - start_date), extract(epoch from end_date) "
        "from task_instance where run_id = 'edge-run-1' and queued_dttm is not null",
    )
    waits: dict[str, list[float]] = {}
    for _, executor, wait_s, _, _ in rows:
        waits.setdefault("edge" if executor == "EdgeExecutor" else "local", []).append(
            float(wait_s)
        )
    ends = {str(t): float(e) for t, _, _, _, e in rows}
    round_2 = ends["round_2.aggregate"] - ends["round_1.aggregate"]
    print(
        f"\nedge run: 3 sites x 2 rounds, {len(states)} tasks, {seconds:.1f} s trigger to "
        f"success; round 2 took {round_2:.1f} s; queued->start mean "
        + ", ".join(f"{k} {sum(v) / len(v):.2f} s (n={len(v)})" for k, v in sorted(waits.items()))
    )


def test_a_stopped_worker_is_dropped_by_the_quorum(federation: tuple[Deployment, Path]) -> None:
    d, _ = federation
    trigger(d, "edge-run-2")
    wait(  # site-03 has sent its round-1 update: it is part of this run
        "site-03 trained round 1",
        lambda: task_states(d, "edge-run-2").get("round_1.train_site-03", ("",))[0] == "success",
        300,
    )
    assert stop(d.stack, "worker-site-03", timeout=1)  # the hospital's machine goes away
    try:
        wait("run 2 finished", lambda: run_state(d, "edge-run-2") in ("success", "failed"), 420)
        states = task_states(d, "edge-run-2")
        assert run_state(d, "edge-run-2") == "success", states
        assert states["round_2.train_site-03"][0] == "failed"
        assert states["round_2.aggregate"][0] == "success"
        second = summary(d, "edge-run-2", 2)
        assert second["contributed"] == ["site-01", "site-02"]
        assert second["missing"] == ["site-03"]
        assert summary(d, "edge-run-2", 1)["contributed"] == list(SITES)
    finally:
        start_worker(d, "site-03", "site-03")
