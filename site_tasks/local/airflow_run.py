"""Airflow for the local demo: its CLI with the stack's environment, and ``airflow dags test``
made readable in the Airflow UI.

``airflow dags test`` runs a DAG run's tasks one at a time inside its own process and writes every
log record to stdout. A worker writes each task's records to a file of its own, and that file is
what the API server shows; after a plain ``dags test`` every log pane of the UI is empty ("Log file
not found on worker"). ``dags_test`` runs it with ``[logging] json_logs`` (one JSON record per line,
the format a worker writes) and splits the stream at the ``[DAG TEST] starting`` and ``end task``
markers: each task's records are appended to its try's file under the stack's log folder, at
``stack.TASK_LOG_TEMPLATE``, where the API server reads them. The whole stream also goes to one
plain-text file, and one progress line is printed per finished task and aggregated round.

When the run is over, the same process copies the note the run's ``summarise`` task left (its
XCom ``note``) onto the DAG run (``publish_note``): under ``dags test`` there is no API server
through which the task could set it itself.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from site_tasks.local.stack import BIN, REPO, TASK_LOG_TEMPLATE, Stack

NOTE_TASK, NOTE_KEY = "summarise", "note"
"""The task, and its XCom, that hold the run's note (``dags/fedmap_federation.py``)."""
log = logging.getLogger("site_tasks")


def airflow(stack: Stack, args: Sequence[str]) -> None:
    """Run an airflow CLI command quietly with the stack's environment."""
    env = {**os.environ, **stack.environment()}
    done = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, cwd=REPO
    )
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def task_log_path(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> Path:
    """A task try's log file under the log folder, as the API server looks for it (the pinned
    ``[logging] log_filename_template``, rendered as Airflow renders it: with Jinja)."""
    import jinja2

    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
    return Path(jinja2.Template(TASK_LOG_TEMPLATE).render(ti=ti, try_number=try_number))


class TaskLogs:
    """Each task instance's records, appended to its try's log file while ``dags test`` runs it.

    ``dags test`` runs one task at a time, so every record between a task's ``starting`` and
    ``end task`` markers is that task's. The try number follows ``dag.test()``'s loop: a task
    starts at try 1 and moves to the next try only after ``up_for_retry``; a sensor's reschedule
    poke keeps its try and appends to the same file, as a worker does.
    """

    def __init__(self, root: Path, dag_id: str) -> None:
        self.root, self.dag_id, self.run_id = root, dag_id, ""
        self.tries: dict[tuple[str, int], int] = {}
        self.ended: dict[tuple[str, int], str] = {}
        self._task: tuple[str, int] | None = None
        self._file: IO[str] | None = None

    def start(self, task_id: str, map_index: int) -> None:
        self.end("?")
        key = (task_id, map_index)
        if key not in self.tries or self.ended.get(key) == "up_for_retry":
            self.tries[key] = self.tries.get(key, 0) + 1
        path = self.root / task_log_path(
            self.dag_id, self.run_id, task_id, map_index, self.tries[key]
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._task, self._file = key, path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, default=str) + "\n")

    def end(self, state: str) -> None:
        """The current task's records are over; ``state``: the state it ended in."""
        if self._task is not None:
            self.ended[self._task] = state
        if self._file is not None:
            self._file.close()
        self._task, self._file = None, None


def _record(line: str, timestamp: str | None) -> dict[str, Any]:
    """A stdout line as a log record: Airflow's own JSON record, or a line a task printed (as a
    worker logs it: logger ``task.stdout``, stamped with the last record's time)."""
    text = line.rstrip("\n")
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict) and "event" in record:
            return record
    return {"timestamp": timestamp, "level": "info", "event": text, "logger": "task.stdout"}


def _text(record: dict[str, Any]) -> str:
    """One record as a line of the plain-text log: time, level, event, logger, its fields."""
    skip = {"timestamp", "level", "event", "logger", "filename", "lineno"}
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)
    logger = f" [{record['logger']}]" if record.get("logger") else ""
    head = f"{record.get('timestamp') or '-'} [{record.get('level', 'info'):7s}]"
    return f"{head} {record['event']}{logger}{' ' + fields if fields else ''}\n"


def dags_test(
    stack: Stack, dag_id: str, log: Path, names: dict[str, list[str]] | None = None
) -> tuple[str, str]:
    """``airflow dags test dag_id``: each task's log where the Airflow UI reads it, the whole
    stream as text in ``log``, one progress line per finished task and per aggregated round (a
    train or aggregate poke that only waited prints nothing) and the run's note; ``names``: the
    site at each map index of each mapped task. Returns (run id, final state)."""
    env = {
        **os.environ,
        **stack.environment(),
        "AIRFLOW__LOGGING__JSON_LOGS": "True",
        "PYTHONUNBUFFERED": "1",
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "site_tasks.local.airflow_run", "dags-test", dag_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        assert proc.stdout is not None
        run = follow(proc.stdout, TaskLogs(stack.task_logs, dag_id), out, names, started)
        code = proc.wait()
    if code or not run[0]:
        raise RuntimeError(f"airflow dags test {dag_id} exited with {code}; see {log}")
    print(f"  {dag_id}: {run[1]} in {time.monotonic() - started:.0f} s", flush=True)
    return run


def follow(
    lines: Iterable[str],
    tasks: TaskLogs,
    out: IO[str],
    names: dict[str, list[str]] | None = None,
    started: float = 0.0,
) -> tuple[str, str]:
    """Read the stream of ``dags test``: every record as text to ``out``, each task's records to
    its log file (``tasks``), a progress line per finished task and aggregated round. Returns
    (run id, final state) from its ``DagRun Finished`` record, ("", "unknown") without one."""
    count, state, run, timestamp = 0, "?", ("", "unknown"), None
    for line in lines:
        record = _record(line, timestamp)
        timestamp = record.get("timestamp") or timestamp
        event = str(record["event"])
        out.write(_text(record))
        if event.startswith("[DAG TEST] starting "):
            fields = _fields(event)
            tasks.start(fields.get("task_id", "?"), int(fields.get("map_index", "-1")))
        tasks.write(record)
        if "new_state" in record:
            state = str(record["new_state"])
        elif event == "creating dag run" and record.get("run_id"):
            tasks.run_id = str(record["run_id"])
        elif event.startswith("[DAG TEST] end task"):
            tasks.end(state)
            if state not in ("up_for_reschedule", "?"):
                count += 1
                fields = _fields(event)
                task = fields.get("task_id", "?")
                index = fields.get("map_index", "-1")
                sites = (names or {}).get(task, [])
                site = sites[int(index)] if 0 <= int(index) < len(sites) else f"#{index}"
                name = task if index == "-1" else f"{task} [{site}]"
                print(f"  [{count:3d}] {name:32s} {state}", flush=True)
            state = "?"
        elif event.startswith("round ") and " aggregated: " in event:
            said = event.split(" (")[0].strip()
            print(f"  {time.monotonic() - started:6.1f} s  {said}", flush=True)
        elif event.startswith("DagRun Finished"):
            fields = _fields(event)
            run = (fields.get("run_id", ""), fields.get("state", "unknown"))
    tasks.end("?")
    return run


def _fields(line: str) -> dict[str, str]:
    """The key=value pairs of an Airflow log line."""
    pairs = (w.split("=", 1) for w in line.replace(", ", " ").split() if "=" in w)
    return {k: v.rstrip(",") for k, v in pairs}


def publish_note(dag_id: str, task_id: str = NOTE_TASK) -> str | None:
    """Set the note of dag_id's newest run to its ``task_id``'s XCom ``note``; return the note,
    or None when that task left none. Runs in the ``dags test`` process (with the metadata
    database, as the CLI has it), after the run: under ``dags test`` no API server exists through
    which the task could set the note, and the Task SDK sets a note only on a run it triggers."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        newest = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())
        run = session.scalars(newest.limit(1)).first()
        if run is None:
            return None
        query = XComModel.get_many(
            run_id=run.run_id, key=NOTE_KEY, dag_ids=dag_id, task_ids=task_id
        )
        row = session.scalars(query.limit(1)).first()
        note = None if row is None else XComModel.deserialize_value(row)
        if not isinstance(note, str) or not note:
            return None
        if run.dag_run_note is None:
            run.note = note
        else:
            run.dag_run_note.content = note
    log.info("note of %s set (%d characters)", run.run_id, len(note))
    return note


def _dags_test(dag_id: str) -> int:
    """``airflow dags test dag_id`` in this process, then its run's note; the CLI's exit code."""
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dags", "test", dag_id]
    code = 0
    try:
        airflow_main()  # type: ignore[no-untyped-call]
    except SystemExit as exc:  # the CLI's way of saying the run failed
        code = exc.code if isinstance(exc.code, int) else 1
    publish_note(dag_id)  # a failed run is told too
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "dags-test":
        print("usage: python -m site_tasks.local.airflow_run dags-test DAG_ID", file=sys.stderr)
        return 2
    return _dags_test(args[1])


if __name__ == "__main__":
    sys.exit(main())
