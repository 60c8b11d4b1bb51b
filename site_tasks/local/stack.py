"""The local stack: a real S3 server (``rclone serve s3``), an MLflow tracking server (SQLite) and,
for browsing, ``airflow standalone``; each a background process with its state under one folder.

``python -m site_tasks.local.stack up|down|status`` is what ``make up`` / ``make down`` run; the demo
starts the two servers the same way and stops what it started. In deployment these are MinIO or
AWS S3, MLflow on PostgreSQL, and a real Airflow deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TASK_LOG_TEMPLATE = (
    "dag_id={{ ti.dag_id }}/run_id={{ ti.run_id }}/task_id={{ ti.task_id }}/"
    "{% if ti.map_index >= 0 %}map_index={{ ti.map_index }}/{% endif %}"
    "attempt={{ try_number|default(ti.try_number) }}.log"
)
"""Where a task instance's log lies under the log folder: Airflow 3's default
``[logging] log_filename_template``, pinned for every Airflow process of the stack, so the API
server reads a task's log where ``airflow_run.dags_test`` writes it."""


@dataclass(frozen=True)
class Stack:
    """Ports and folders of the local services; everything lives under ``state``."""

    state: Path
    s3_port: int = int(os.environ.get("FEDMAP_S3_PORT", "9000"))
    mlflow_port: int = int(os.environ.get("FEDMAP_MLFLOW_PORT", "5000"))
    airflow_port: int = int(os.environ.get("FEDMAP_AIRFLOW_PORT", "8080"))

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def federations(self) -> Path:
        """$FEDMAP_FEDERATIONS_DIR, else the demo's folder under the state folder."""
        default = self.state / "demo" / "federations"
        return Path(os.environ.get("FEDMAP_FEDERATIONS_DIR", default))

    @property
    def task_logs(self) -> Path:
        """Airflow's log folder (``[logging] base_log_folder``): one file per task try."""
        return self.state / "airflow" / "logs"

    def credentials(self) -> tuple[str, str]:
        """The local S3 server's key pair, made once and kept in the state folder (mode 600)."""
        path = self.state / "s3" / "credentials.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"access": "fedmap-local", "secret": secrets.token_hex(16)}))
            path.chmod(0o600)
        body = json.loads(path.read_text())
        return str(body["access"]), str(body["secret"])

    def environment(self) -> dict[str, str]:
        """What Airflow (tasks and CLI) needs: its home, DAGs, logs, and the connections to S3,
        MLflow and its own API server."""
        access, secret = self.credentials()
        s3 = {
            "conn_type": "aws",
            "login": access,
            "password": secret,
            "extra": {"endpoint_url": self.s3_url},
        }
        return {
            "AIRFLOW_HOME": str(self.state / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__HOST": "127.0.0.1",  # every local user is admin: never on the network
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.task_logs),
            "AIRFLOW__LOGGING__LOG_FILENAME_TEMPLATE": TASK_LOG_TEMPLATE,
            "FEDMAP_FEDERATIONS_DIR": str(self.federations),
            "AIRFLOW_CONN_FEDMAP_S3": json.dumps(s3),
            "AIRFLOW_CONN_FEDMAP_MLFLOW": json.dumps(
                {"conn_type": "http", "host": self.mlflow_url}
            ),
            # Airflow's own API, through which a run's last task sets the run's note
            "AIRFLOW_CONN_FEDMAP_AIRFLOW": json.dumps(
                {"conn_type": "http", "host": self.airflow_url}
            ),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return True
    except OSError:
        return False


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _pidfile(stack: Stack, name: str) -> Path:
    return stack.state / "pids" / f"{name}.pid"


def _spawn(
    stack: Stack,
    name: str,
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> None:
    """Start argv in its own session (so ``down`` can stop its whole process group), with the
    stack's environment unless ``env`` is given."""
    logs = stack.state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _pidfile(stack, name).parent.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            # airflow standalone starts its components as `airflow ...` found on PATH
            env={
                **os.environ,
                **(stack.environment() if env is None else env),
                "PATH": f"{BIN}:{os.environ['PATH']}",
            },
            start_new_session=True,
            user=user,
        )
    _pidfile(stack, name).write_text(f"{proc.pid} {_started(proc.pid)}")


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s; log tail:\n{tail}")
        time.sleep(0.2)


def serve(
    stack: Stack,
    name: str,
    what: str,
    argv: Sequence[str],
    ready: Callable[[], bool],
    timeout: float,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> bool:
    """Start service ``name`` unless ``ready()`` already holds, then wait until it does (or fail
    with its log's tail). Return whether it was started here."""
    if ready():
        return False
    cwd = stack.state / name
    cwd.mkdir(parents=True, exist_ok=True)
    _spawn(stack, name, argv, cwd, env, user)
    _wait(what, ready, timeout, stack.state / "logs" / f"{name}.log")
    return True


def start_s3(stack: Stack) -> bool:
    """Start ``rclone serve s3`` over ``state/s3/data`` unless something already serves the port;
    return whether it was started here."""
    access, secret = stack.credentials()
    data = stack.state / "s3" / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [str(BIN / "rclone"), "serve", "s3", str(data), "--addr", f"127.0.0.1:{stack.s3_port}"]
    argv += ["--auth-key", f"{access},{secret}", "--config", "/dev/null"]
    return serve(stack, "s3", "S3 server", argv, lambda: accepts(stack.s3_port), 20)


def start_mlflow(stack: Stack) -> bool:
    """Start an MLflow tracking server on SQLite with local artifacts, unless one is up."""
    root = stack.state / "mlflow"
    argv = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1"]
    argv += ["--port", str(stack.mlflow_port), "--workers", "1"]
    return serve(
        stack, "mlflow", "MLflow server", argv, lambda: healthy(f"{stack.mlflow_url}/health"), 90
    )


def start_airflow(stack: Stack) -> bool:
    """``airflow standalone`` (API server, scheduler, DAG processor, triggerer) for browsing."""
    return serve(
        stack,
        "airflow",
        "airflow standalone",
        [str(BIN / "airflow"), "standalone"],
        lambda: healthy(f"{stack.airflow_url}/api/v2/monitor/health"),
        180,
    )


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), so a
    pid file can tell its own process from a later one that reused the number."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def running_pid(stack: Stack, name: str) -> int | None:
    """The pid this module started for ``name``, if that very process is still alive; a stale
    pid file (the process is gone, or its number now belongs to another) is removed."""
    pidfile = _pidfile(stack, name)
    if not pidfile.exists():
        return None
    pid, _, started = pidfile.read_text().partition(" ")
    if started and _started(int(pid)) == started:
        return int(pid)
    pidfile.unlink()
    return None


def _session(sid: int) -> list[int]:
    """Every process of a session. Airflow puts each task in a process group of its own inside
    the worker's session, so signalling the leader's group alone would leave tasks running."""
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(stack: Stack, name: str, timeout: float = 20) -> bool:
    """Stop a service started by this module: TERM every process of its session, then KILL what
    is left after ``timeout`` seconds."""
    sid = running_pid(stack, name)
    if sid is None:
        return False
    _pidfile(stack, name).unlink()
    pids = _session(sid)
    if not pids:
        return False
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap it when it is our own child
            os.waitpid(sid, os.WNOHANG)
        alive = [p for p in _session(sid) if p in pids]
        if not alive:
            return True
        time.sleep(0.2)
    _signal_all(_session(sid), signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(sid, os.WNOHANG)
    return True


def up(stack: Stack) -> None:
    for name, start in (("S3", start_s3), ("MLflow", start_mlflow), ("Airflow", start_airflow)):
        print(f"{name:8s} {'started' if start(stack) else 'already running'}", flush=True)
    print(f"Airflow UI  {stack.airflow_url}  (every user is admin locally; DAGs: fedmap_*)")
    print(f"MLflow UI   {stack.mlflow_url}")
    print(f"S3          {stack.s3_url}  (keys in {stack.state / 's3' / 'credentials.json'})")
    print(f"logs        {stack.state / 'logs'}   stop with: make down")


def down(stack: Stack) -> None:
    for name in ("airflow", "mlflow", "s3"):
        print(f"{name:8s} {'stopped' if stop(stack, name) else 'not running'}")


def status(stack: Stack) -> None:
    checks = {
        "s3": accepts(stack.s3_port),
        "mlflow": healthy(f"{stack.mlflow_url}/health"),
        "airflow": healthy(f"{stack.airflow_url}/api/v2/monitor/health"),
    }
    for name, ok in checks.items():
        print(f"{name:8s} {'up' if ok else 'down'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m site_tasks.local.stack",
        description="Start or stop the local S3 server, MLflow server and airflow standalone. "
        "Ports: $FEDMAP_S3_PORT (9000), $FEDMAP_MLFLOW_PORT (5000), $FEDMAP_AIRFLOW_PORT (8080).",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state", type=Path, default=REPO / ".state", help="the state folder")
    args = parser.parse_args(argv)
    stack = Stack(args.state.resolve())
    {"up": up, "down": down, "status": status}[args.command](stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
