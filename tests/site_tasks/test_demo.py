"""The demo's pieces that run without servers: the federation it writes, how it reads Airflow's
log lines, the table it prints, and the local stack's settings."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from site_tasks.demo import TIERS, _fields, table, write_federation
from site_tasks.federation import load_federation
from site_tasks.plan import read_plan
from site_tasks.stack import Stack


def test_the_demo_federation_has_three_tiers_and_valid_files(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    path = write_federation(stack, rounds=3, seed=0)
    config, plan = load_federation(path), read_plan(path)
    assert [len(plan.tier(t)) for t in (1, 2, 3)] == [10, 2, 2]
    assert config.rounds == 3 and config.min_sites == 6 and plan.schedule == "@weekly"
    assert (plan.storage_connection, plan.mlflow_connection) == ("fedmap_s3", "fedmap_mlflow")
    for name, site in config.sites.items():
        files = sorted(p.name for p in site.data.iterdir())
        if TIERS[name] == 3:
            assert files == ["reference.csv", "score.csv"]  # features only: no outcome on site
            truth = (tmp_path / "demo" / "truth" / f"{name}.txt").read_text().split()
            assert len(truth) == len((site.data / "score.csv").read_text().splitlines()) - 1
        else:
            assert files == ["train.csv", "val.csv"]
    before = (config.site("site-01").data / "train.csv").stat().st_mtime_ns
    write_federation(stack, rounds=3, seed=0)  # a second demo reuses the data
    assert (config.site("site-01").data / "train.csv").stat().st_mtime_ns == before


def test_airflow_log_fields_are_parsed() -> None:
    line = (
        "2026-11-23T22:16:39Z [info] DagRun Finished: dag_id=fedmap_demo, logical_date=2026-11-23 "
        "22:16:30+00:00, run_id=manual__2026-11-23T22:16:30.556716+00:00, state=success, x=1"
    )
    fields = _fields(line)
    assert fields["run_id"] == "manual__2026-11-23T22:16:30.556716+00:00"
    assert fields["state"] == "success" and fields["dag_id"] == "fedmap_demo"


def test_the_table_shows_gains_and_means_of_tiers_1_and_2() -> None:
    summary = {
        "sites": {
            "site-01": {"tier": 1, "individual_accuracy": 0.90, "fedmap_accuracy": 0.93},
            "site-06": {"tier": 2, "individual_accuracy": 0.80, "fedmap_accuracy": 0.79},
            "site-07": {"tier": 3, "individual_accuracy": None, "fedmap_accuracy": 0.5},
        }
    }
    lines = table(summary).splitlines()
    assert "+3.00" in lines[2] and "-1.00" in lines[3]
    assert lines[4].split()[-2:] == ["50.00", "-"]
    assert lines[-1].split()[-3:] == ["85.00", "86.00", "+1.00"]


def test_the_stack_keeps_credentials_private_and_wires_airflow(tmp_path: Path) -> None:
    stack = Stack(tmp_path, s3_port=9100, mlflow_port=5100, airflow_port=8180)
    access, secret = stack.credentials()
    assert stack.credentials() == (access, secret) and len(secret) == 32
    mode = (tmp_path / "s3" / "credentials.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    env = stack.environment()
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8180/execution/"
    s3 = json.loads(env["AIRFLOW_CONN_FEDMAP_S3"])
    assert s3["extra"]["endpoint_url"] == "http://127.0.0.1:9100" and s3["password"] == secret
    assert json.loads(env["AIRFLOW_CONN_FEDMAP_MLFLOW"])["host"] == "http://127.0.0.1:5100"
