"""The demo's ``airflow dags test`` runner without a run: how it splits the stream into each task
try's log file where the API server looks, and the stack settings that make the two agree.
(A real run read back through the API server: tests/dags/test_run_pages.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from site_tasks.local.airflow_run import TaskLogs, follow, task_log_path
from site_tasks.local.stack import TASK_LOG_TEMPLATE, Stack

RUN = "manual__2026-12-02T02:39:43.468325+00:00"


def test_the_pinned_log_template_is_airflows_default() -> None:
    from airflow.configuration import conf

    assert conf.get_default_value("logging", "log_filename_template") == TASK_LOG_TEMPLATE


def test_a_task_try_has_the_path_the_api_server_reads(tmp_path: Path) -> None:
    assert task_log_path("fedmap_demo", RUN, "train", 3, 2) == Path(
        f"dag_id=fedmap_demo/run_id={RUN}/task_id=train/map_index=3/attempt=2.log"
    )
    assert task_log_path("fedmap_demo", RUN, "start", -1, 1) == Path(
        f"dag_id=fedmap_demo/run_id={RUN}/task_id=start/attempt=1.log"
    )
    env = Stack(tmp_path).environment()
    assert env["AIRFLOW__LOGGING__LOG_FILENAME_TEMPLATE"] == TASK_LOG_TEMPLATE
    assert env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == str(tmp_path / "airflow" / "logs")
    assert json.loads(env["AIRFLOW_CONN_FEDMAP_AIRFLOW"])["host"] == "http://127.0.0.1:8080"


def _line(event: str, **fields: object) -> str:
    """One record as ``dags test`` prints it under ``[logging] json_logs``."""
    body = {"timestamp": "2026-12-02T02:40:00.000000Z", "level": "info", "event": event}
    return json.dumps({**body, **fields, "logger": fields.pop("logger", "x")}) + "\n"


def _task(task: str, index: int, state: str, *lines: str) -> list[str]:
    """A task's block in the stream: its markers around its lines and its state update."""
    return [
        _line(f"[DAG TEST] starting task_id={task} map_index={index}"),
        *lines,
        _line("Task instance state updated", new_state=state),
        _line(f"[DAG TEST] end task task_id={task} map_index={index}"),
    ]


def test_the_stream_is_split_into_each_task_trys_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _line("site-01: round 1: training on cpu", logger="site_tasks")
    stream = [
        _line("creating dag run", run_id=RUN),
        *_task("train", 0, "up_for_reschedule", site),  # a poke that trained, then waits
        *_task("aggregate", -1, "success", _line("round 1 aggregated: 1 update(s) accepted (x)")),
        *_task("train", 0, "up_for_retry", "a line the task printed\n"),  # same try: appended
        *_task("train", 0, "success", _line("site-01: round 2: training on cpu")),  # try 2
        _line(f"DagRun Finished: dag_id=fedmap_demo, run_id={RUN}, state=success, x=1"),
    ]
    out = io.StringIO()
    run = follow(stream, TaskLogs(tmp_path, "fedmap_demo"), out, {"train": ["site-01"]})
    assert run == (RUN, "success")

    def events(task: str, index: int, attempt: int) -> list[str]:
        path = tmp_path / task_log_path("fedmap_demo", RUN, task, index, attempt)
        return [json.loads(line)["event"] for line in path.read_text().splitlines()]

    first = events("train", 0, 1)
    assert "site-01: round 1: training on cpu" in first
    assert "a line the task printed" in first  # a printed line becomes a record too
    assert "site-01: round 2: training on cpu" not in first
    assert "site-01: round 2: training on cpu" in events("train", 0, 2)
    assert "round 1 aggregated: 1 update(s) accepted (x)" in events("aggregate", -1, 1)
    assert not any("DagRun Finished" in e for e in events("aggregate", -1, 1))
    assert sorted(p.name for p in tmp_path.rglob("*.log")) == ["attempt=1.log"] * 2 + [
        "attempt=2.log"
    ]
    text = out.getvalue().splitlines()
    assert len(text) == len(stream)  # everything, as text, in the run's own log
    assert text[-1].startswith("2026-12-02T02:40:00.000000Z [info   ] DagRun Finished")
    printed = capsys.readouterr().out.splitlines()
    assert [p.split("]", 1)[1].split() for p in printed if p.strip().startswith("[")] == [
        ["aggregate", "success"],  # a poke that only waited prints nothing
        ["train", "[site-01]", "up_for_retry"],
        ["train", "[site-01]", "success"],
    ]
    assert any(p.endswith("round 1 aggregated: 1 update(s) accepted") for p in printed)
