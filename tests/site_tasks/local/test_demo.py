"""The demo's pieces that run without servers: the federation it writes, how it reads Airflow's
log lines, the table it prints, and the local stack's settings."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedmap.schema import read_federation
from site_tasks.federation import load_federation
from site_tasks.local.airflow_run import _fields
from site_tasks.local.demo import gain_picture, table, tier3_scores, write_federation
from site_tasks.local.demo_data import TIERS, write_data
from site_tasks.local.stack import Stack


def test_the_demo_federation_has_three_tiers_and_valid_files(tmp_path: Path) -> None:
    stack, data = Stack(tmp_path), tmp_path / "data"
    write_data(data, seed=0)  # what the dvc stage demo_data runs
    assert sorted(p.name for p in data.iterdir()) == sorted([*TIERS, "truth"])
    path = write_federation(stack, rounds=3, seed=0, data=data)
    config, plan = load_federation(path), read_federation(path)
    assert [len(plan.tier(t)) for t in (1, 2, 3)] == [10, 2, 2]
    assert config.rounds == 3 and config.min_sites == 6 and plan.schedule == "@weekly"
    assert (plan.require_storage().connection, plan.mlflow.connection) == (
        "fedmap_s3",
        "fedmap_mlflow",
    )
    assert all(config.site(s).queue == s for s in TIERS)  # each site on its own queue
    for name, site in config.sites.items():
        assert site.data == data / name
        files = sorted(p.name for p in site.data.iterdir())
        if TIERS[name] == 3:
            assert files == ["reference.csv", "score.csv"]  # features only: no outcome on site
            truth = (data / "truth" / f"{name}.txt").read_text().split()
            assert len(truth) == len((site.data / "score.csv").read_text().splitlines()) - 1
        else:
            assert files == ["train.csv", "val.csv"]


def test_airflow_log_fields_are_parsed() -> None:
    line = (
        "2026-11-23T22:16:39Z [info] DagRun Finished: dag_id=fedmap_demo, logical_date=2026-11-23 "
        "22:16:30+00:00, run_id=manual__2026-11-23T22:16:30.556716+00:00, state=success, x=1"
    )
    fields = _fields(line)
    assert fields["run_id"] == "manual__2026-11-23T22:16:30.556716+00:00"
    assert fields["state"] == "success" and fields["dag_id"] == "fedmap_demo"


def test_the_table_shows_gains_aurocs_and_means_of_tiers_1_and_2() -> None:
    summary = {
        "rounds": 3,
        "sites": {
            "site-01": {
                "tier": 1,
                "individual_accuracy": 0.90,
                "fedmap_accuracy": 0.93,
                "individual_auroc": 0.91,
                "fedmap_auroc": 0.95,
            },
            "site-06": {"tier": 2, "individual_accuracy": 0.80, "fedmap_accuracy": 0.79},
            "site-07": {
                "tier": 3,
                "majority_rate": 0.55,
                "fedmap_accuracy": 0.75,
                "fedmap_auroc": 0.81,
            },
        },
    }
    lines = table(summary).splitlines()
    assert "+3.00" in lines[2] and lines[2].split()[-2:] == ["0.910", "0.950"]
    assert "-1.00" in lines[3]
    # tier 3 is measured against its majority-class rate
    assert "majority class" in lines[4] and "+20.00" in lines[4] and lines[4].endswith("0.810")
    assert lines[-1].split()[-3:] == ["85.0", "86.0", "+1.00"]


def test_tier3_scores_read_the_newest_predictions_against_the_held_back_truth(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    header = "row,probability,prediction,model,version\n"
    rows = [
        "1,0.9,1,fedmap-demo-prior,2",
        "2,0.2,0,fedmap-demo-prior,2",
        "3,0.6,1,fedmap-demo-prior,2",
    ]
    (folder / "predictions_fedmap-demo-prior_v2.csv").write_text(header + "\n".join(rows) + "\n")
    truth = tmp_path / "truth.txt"
    truth.write_text("1\n0\n0\n")
    got = tier3_scores(folder, truth)
    assert got["fedmap_accuracy"] == pytest.approx(2 / 3)
    assert got["majority_rate"] == pytest.approx(2 / 3)
    assert got["fedmap_auroc"] == pytest.approx(1.0)
    assert got["model"] == "fedmap-demo-prior v2"
    assert tier3_scores(tmp_path / "none", truth)["fedmap_accuracy"] is None


def test_the_gain_picture_is_written(tmp_path: Path) -> None:
    summary = {
        "rounds": 3,
        "sites": {
            "site-01": {"tier": 1, "individual_accuracy": 0.9, "fedmap_accuracy": 0.93},
            "site-07": {"tier": 3, "majority_rate": 0.5, "fedmap_accuracy": 0.8},
            "site-14": {"tier": 3, "majority_rate": None, "fedmap_accuracy": None},
        },
    }
    path = gain_picture(summary, tmp_path / "gain.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_stop_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    """A stale pid file whose number now belongs to someone else is dropped, not obeyed."""
    import subprocess

    from site_tasks.local.stack import _pidfile, _spawn, running_pid, stop

    stack = Stack(tmp_path)
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        _pidfile(stack, "mlflow").parent.mkdir(parents=True)
        _pidfile(stack, "mlflow").write_text(f"{stranger.pid} 1")  # another process's start time
        assert running_pid(stack, "mlflow") is None and not _pidfile(stack, "mlflow").exists()
        _pidfile(stack, "mlflow").write_text(str(stranger.pid))  # an old-style file, no time
        assert stop(stack, "mlflow") is False
        assert stranger.poll() is None  # still alive
        _spawn(stack, "s3", ["sleep", "30"], tmp_path, {})  # one of ours
        ours = running_pid(stack, "s3")
        assert ours is not None and stop(stack, "s3", timeout=5)
        assert running_pid(stack, "s3") is None
    finally:
        stranger.kill()
        stranger.wait()
