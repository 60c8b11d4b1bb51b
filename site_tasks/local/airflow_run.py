"""Airflow for the local demo: its CLI with the stack's environment, and ``airflow dags test`` with
one progress line per finished task and per aggregated round."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from site_tasks.local.stack import BIN, REPO, Stack


def airflow(stack: Stack, args: Sequence[str]) -> None:
    """Run an airflow CLI command quietly with the stack's environment."""
    env = {**os.environ, **stack.environment()}
    done = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, cwd=REPO
    )
    if done.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def dags_test(
    stack: Stack, dag_id: str, log: Path, names: dict[str, list[str]] | None = None
) -> tuple[str, str]:
    """``airflow dags test dag_id``, its log to a file and one progress line per finished task
    and per aggregated round (a train or aggregate poke that only waited prints nothing);
    ``names``: the site at each map index of each mapped task. Returns (run id, final state)."""
    env = {**os.environ, **stack.environment()}
    log.parent.mkdir(parents=True, exist_ok=True)
    count, state, run = 0, "?", ("", "unknown")
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "dags", "test", dag_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            fields = _fields(line)
            if "new_state" in fields:
                state = fields["new_state"]
            elif "[DAG TEST] end task" in line:
                if state not in ("up_for_reschedule", "?"):
                    count += 1
                    task = fields.get("task_id", "?")
                    index = fields.get("map_index", "-1")
                    sites = (names or {}).get(task, [])
                    site = sites[int(index)] if 0 <= int(index) < len(sites) else f"#{index}"
                    name = task if index == "-1" else f"{task} [{site}]"
                    print(f"  [{count:3d}] {name:32s} {state}", flush=True)
                state = "?"
            elif " aggregated: " in line and "round " in line:
                said = line[line.index("round ") :].split(" (")[0].strip()
                print(f"  {time.monotonic() - started:6.1f} s  {said}", flush=True)
            elif "DagRun Finished" in line:
                run = (fields.get("run_id", ""), fields.get("state", "unknown"))
        code = proc.wait()
    if code or not run[0]:
        raise RuntimeError(f"airflow dags test {dag_id} exited with {code}; see {log}")
    print(f"  {dag_id}: {run[1]} in {time.monotonic() - started:.0f} s", flush=True)
    return run


def _fields(line: str) -> dict[str, str]:
    """The key=value pairs of an Airflow log line."""
    pairs = (w.split("=", 1) for w in line.replace(", ", " ").split() if "=" in w)
    return {k: v.rstrip(",") for k, v in pairs}
