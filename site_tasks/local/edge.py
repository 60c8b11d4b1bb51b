"""A real multi-process federation on one machine: ``make federation-up`` / ``federation-down``.

The coordinating centre is an Airflow deployment on PostgreSQL (from the ``pgserver`` wheel):
API server, scheduler and DAG processor. Server tasks (start, aggregate, register) run on the
LocalExecutor. Every site is an Airflow **edge worker**, a separate process that pulls its own
queue's tasks over HTTP from the API server (outbound only), with its own Airflow home, its own
S3 key pair and its own data folder; it has no database access. Nothing but a site's worker runs
that site's tasks, so nothing else reads its data.

``python -m site_tasks.local.edge up --federation FILE`` starts it all for one federation file,
``down`` stops it, ``status`` shows it. State lives under ``.state/federation/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from site_tasks.local.stack import (
    BIN,
    REPO,
    Stack,
    _spawn,
    _wait,
    accepts,
    healthy,
    running_pid,
    serve,
    stop,
)
from site_tasks.plan import read_plan

EXECUTORS = "LocalExecutor,airflow.providers.edge3.executors.EdgeExecutor"
CENTRE = ("postgres", "api-server", "scheduler", "dag-processor")
POLICY = REPO / "infra" / "centre" / "airflow_local_settings.py"
"""The same cluster policy a real deployment installs (infra/centre)."""


@dataclass(frozen=True)
class Deployment:
    """Ports, folders and secrets of one local federation deployment."""

    state: Path
    api_port: int = int(os.environ.get("FEDMAP_FED_API_PORT", "28080"))
    pg_port: int = int(os.environ.get("FEDMAP_FED_PG_PORT", "54329"))
    s3_port: int = int(os.environ.get("FEDMAP_FED_S3_PORT", "29000"))
    log_port: int = int(os.environ.get("FEDMAP_FED_LOG_PORT", "28793"))
    """The scheduler's task-log server (Airflow's default 8793 may belong to another stack)."""
    queued_timeout_s: int = int(os.environ.get("FEDMAP_QUEUED_TIMEOUT_S", "60"))
    """A site task no worker picks up within this time fails, and the quorum decides."""

    @property
    def stack(self) -> Stack:
        """The process bookkeeping (pids, logs) of stack.py, under this deployment's folder."""
        return Stack(self.state, s3_port=self.s3_port)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def db_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.pg_port}/airflow"

    def secrets(self) -> dict[str, str]:
        """JWT secret, fernet key, API secret and one S3 key pair per party (made once, 600)."""
        path = self.state / "secrets.json"
        if not path.exists():
            from cryptography.fernet import Fernet

            self.state.mkdir(parents=True, exist_ok=True)
            body = {
                "jwt": secrets.token_urlsafe(48),  # 64 characters
                "fernet": Fernet.generate_key().decode(),
                "api": secrets.token_hex(16),
            }
            path.write_text(json.dumps(body))
            path.chmod(0o600)
        return dict(json.loads(path.read_text()))

    def s3_key(self, who: str) -> tuple[str, str]:
        """The access key pair of the centre or of one site, made once."""
        path = self.state / "s3-keys.json"
        keys = json.loads(path.read_text()) if path.exists() else {}
        if who not in keys:
            keys[who] = [f"fedmap-{who}", secrets.token_hex(16)]
            path.write_text(json.dumps(keys))
            path.chmod(0o600)
        return str(keys[who][0]), str(keys[who][1])

    def common(self) -> dict[str, str]:
        """What the centre and every worker share: the API, the JWT secret, the DAG files."""
        return {
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": EXECUTORS,
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets()["jwt"],
            "AIRFLOW__EDGE__API_URL": f"{self.api_url}/edge_worker/v1/rpcapi",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "FEDMAP_FEDERATIONS_DIR": str(self.state / "federations"),
            "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": "5",
            "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "XDG_CACHE_HOME": str(self.state / "cache"),
            "XDG_CONFIG_HOME": str(self.state / "config"),
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }

    def s3_connection(self, who: str) -> str:
        access, secret = self.s3_key(who)
        extra = {"endpoint_url": f"http://127.0.0.1:{self.s3_port}"}
        return json.dumps({"conn_type": "aws", "login": access, "password": secret, "extra": extra})

    def centre_env(self) -> dict[str, str]:
        keys = self.secrets()
        return {
            **self.common(),
            "AIRFLOW_HOME": str(self.state / "centre"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
            "AIRFLOW__API__SECRET_KEY": keys["api"],
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__EDGE__API_ENABLED": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(self.queued_timeout_s),
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            # a task nobody picks up fails at its first timeout (not after 2 requeues), and a
            # task whose worker died is failed after 30 s without a heartbeat (default 300 s)
            "AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES": "0",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW_CONN_FEDMAP_S3": self.s3_connection("centre"),
            "FEDMAP_WORKER": "centre",
        }

    def worker_env(self, site: str) -> dict[str, str]:
        """A site's worker: its own home and S3 key, the API URL and JWT secret, and no database
        (the URL points nowhere, so any attempt to reach the centre's DB fails loudly)."""
        return {
            **self.common(),
            "AIRFLOW_HOME": str(self.state / "workers" / site),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://nobody@127.0.0.1:1/none",
            "AIRFLOW_CONN_FEDMAP_S3": self.s3_connection(site),
            "FEDMAP_WORKER": site,
        }


def _pg_bin(name: str) -> str:
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root; as root it runs as ``nobody``."""
    return "nobody" if os.geteuid() == 0 else None


def pg_data(d: Deployment) -> Path:
    """The cluster's folder: under the state folder, or, as root, in a folder ``nobody`` can
    reach (the state folder may sit under a private parent such as pytest's temporary root)."""
    if _pg_user() is None:
        return d.state / "pg" / "data"
    digest = hashlib.sha256(str(d.state).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "fedmap-postgres" / digest / "data"


def start_postgres(d: Deployment) -> None:
    data, user = pg_data(d), _pg_user()
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            for folder in (data.parent.parent, data.parent):
                folder.chmod(0o755)
            os.chown(data.parent, entry.pw_uid, entry.pw_gid)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=user,
        )
    if not accepts(d.pg_port):
        argv = [_pg_bin("postgres"), "-D", str(data), "-p", str(d.pg_port), "-h", "127.0.0.1"]
        _spawn(d.stack, "postgres", [*argv, "-k", str(data.parent)], data.parent, {}, user)
        _wait("PostgreSQL", lambda: accepts(d.pg_port), 30, d.state / "logs" / "postgres.log")
    psql = [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(d.pg_port), "-U", "postgres", "-Atc"]
    exists = subprocess.run(
        [*psql, "select 1 from pg_database where datname='airflow'"],
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run([*psql, "create database airflow"], check=True, capture_output=True)


def start_s3(d: Deployment, sites: Sequence[str]) -> None:
    """One S3 server with a key pair for the centre and one per site."""
    data = d.state / "s3"
    argv = [str(BIN / "rclone"), "serve", "s3", str(data), "--addr", f"127.0.0.1:{d.s3_port}"]
    for who in ("centre", *sites):
        argv += ["--auth-key", ",".join(d.s3_key(who))]
    argv += ["--config", "/dev/null"]
    serve(d.stack, "s3", "S3 server", argv, lambda: accepts(d.s3_port), 20, env={})


def _spawn_env(d: Deployment, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
    """Start a service unless the very process started earlier is still running (a rerun of
    ``up`` must not start a second scheduler or a second worker for the same site)."""
    if running_pid(d.stack, name) is None:
        _spawn(d.stack, name, argv, d.state, env)


def up(federation: Path, d: Deployment) -> list[str]:
    """Start the centre and one edge worker per tier-1/2/3 site of the federation; return sites."""
    plan = read_plan(federation)
    sites = [s.name for s in plan.sites]
    central = [s.name for s in plan.sites if s.queue == "default"]
    if central:
        raise ValueError(
            f"{federation}: sites {', '.join(central)} use the queue 'default', which the centre "
            "runs itself; give every site its own queue (sites.<name>.queue)"
        )
    # The centre's cluster policy sends every task on a site's queue to the edge workers.
    (d.state / "centre" / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(POLICY, d.state / "centre" / "config" / "airflow_local_settings.py")
    (d.state / "federations").mkdir(parents=True, exist_ok=True)
    (d.state / "federations" / f"{plan.name}.yaml").write_text(absolute(federation))
    start_s3(d, sites)
    start_postgres(d)
    env = {**os.environ, **d.centre_env()}
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True
    )
    for name, argv in (
        ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(d.api_port)]),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        _spawn_env(d, name, [str(BIN / "airflow"), *argv], d.centre_env())
    _wait(
        "Airflow API server",
        lambda: healthy(f"{d.api_url}/api/v2/monitor/health"),
        120,
        d.state / "logs" / "api-server.log",
    )
    for site in plan.sites:
        start_worker(d, site.name, site.queue)
    return sites


def absolute(federation: Path) -> str:
    """The federation file with its folders made absolute, so it means the same thing from the
    deployment's own federations folder (paths in the file are relative to the file)."""
    import yaml

    body = yaml.safe_load(federation.read_text())
    base = federation.parent

    def resolve(value: str) -> str:
        return str((base / value).resolve())

    for spec in body.get("sites", {}).values():
        for key in ("data", "output"):
            if isinstance(spec, dict) and isinstance(spec.get(key), str):
                spec[key] = resolve(spec[key])
    if isinstance(body.get("state_dir"), str):
        body["state_dir"] = resolve(body["state_dir"])
    return str(yaml.safe_dump(body, sort_keys=False))


def start_worker(d: Deployment, site: str, queue: str) -> None:
    home = d.state / "workers" / site
    home.mkdir(parents=True, exist_ok=True)
    argv = [str(BIN / "airflow"), "edge", "worker", "--queues", queue, "--edge-hostname", site]
    _spawn_env(d, f"worker-{site}", argv, d.worker_env(site))


def down(d: Deployment) -> list[str]:
    """Stop every process this deployment started (workers first, PostgreSQL last)."""
    pids = d.state / "pids"
    workers = sorted(p.stem for p in pids.glob("worker-*.pid")) if pids.exists() else []
    stopped = [w for w in workers if stop(d.stack, w, timeout=5)]  # they hang on TERM
    stopped += [name for name in (*CENTRE[::-1], "s3") if stop(d.stack, name)]
    return stopped


def example_federation(d: Deployment) -> Path:
    """Three hospitals of the demo data (``data/demo``, made if missing), each on its own queue,
    two rounds, quorum two, storage and MLflow through the deployment's connections."""
    import yaml

    from site_tasks.local.demo import DATA, write_data

    if not (DATA / "site-03").exists():
        write_data(DATA, seed=0)
    sites = ("site-01", "site-02", "site-03")
    body = {
        "name": "edge-demo",
        "task": {"contract": "synthetic"},
        "algorithm": {"rounds": 5, "epochs": 1, "batch_size": 64, "lr": 0.01},
        "sites": {s: {"data": str(DATA / s), "queue": s} for s in sites},
        "min_sites": 2,
        "storage": {"bucket": "fedmap-edge", "connection": "fedmap_s3"},
        "device": "auto",
        "state_dir": str(d.state / "site-state"),
    }
    path = d.state / "edge-demo.yaml"
    d.state.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m site_tasks.local.edge",
        description="A multi-process federation on this machine: PostgreSQL, the Airflow API "
        "server, scheduler and DAG processor, an S3 server, and one edge worker per site.",
    )
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument(
        "--federation",
        type=Path,
        help="the federation file for up (default: 3 demo hospitals, fedmap_edge-demo)",
    )
    parser.add_argument(
        "--state", type=Path, default=REPO / ".state" / "federation", help="the state folder"
    )
    args = parser.parse_args(argv)
    d = Deployment(args.state.resolve())
    if args.command == "up":
        began = time.monotonic()
        federation = args.federation.resolve() if args.federation else example_federation(d)
        sites = up(federation, d)
        print(f"centre: {d.api_url} (Airflow UI and edge API), PostgreSQL :{d.pg_port}")
        print(f"workers: {', '.join(sites)} (one process each; logs in {d.state / 'logs'})")
        print(f"up in {time.monotonic() - began:.0f} s; stop with: make federation-down")
        print(
            f"run it: open {d.api_url}, unpause fedmap_<name> and trigger it (new DAGs start "
            "paused); each site task shows its worker as the task's host"
        )
    else:
        print("stopped:", ", ".join(down(d)) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
