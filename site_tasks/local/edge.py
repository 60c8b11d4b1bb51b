"""A real multi-process federation on one machine: ``make federation-up`` / ``federation-down``.

The coordinating centre is an Airflow deployment on PostgreSQL (from the ``pgserver`` wheel):
API server, scheduler and DAG processor. Server tasks (start, aggregate, register) run on the
LocalExecutor. Every site is served by an Airflow **edge worker**, a separate process that pulls
its queue's tasks over HTTP from the API server (outbound only), with its own Airflow home and its
own S3 key pair; it has no database access. Nothing but a site's worker runs that site's tasks,
so nothing else reads its data. The S3 server is SeaweedFS (``site_tasks.local.seaweed``), which
holds each key to its party's rules (``site_tasks.access``): a site's key writes only that
site's messages and reads only the priors and its own messages.

By default each site gets its own worker, as each hospital would. ``--workers K`` spreads the
sites' queues over K workers instead (edge3's ``--queues a,b,c``), so that one machine can stand in
for a federation of a hundred sites or more; ``--slots N`` bounds how many site tasks run at once.
docs/deploy.md ("Many sites") explains each setting.

``python -m site_tasks.local.edge up --federation FILE`` starts it all for one federation file,
``down`` stops it. State lives under ``.state/federation/``.
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
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap.schema import Site, read_federation
from site_tasks import privacy, trust
from site_tasks.access import Identity, centre_identity, site_identity
from site_tasks.federation import load_federation
from site_tasks.local.seaweed import start_seaweed
from site_tasks.local.stack import (
    BIN,
    REPO,
    Stack,
    _spawn,
    _wait,
    accepts,
    free_port,
    healthy,
    running_pid,
    stop,
)

EXECUTORS = "LocalExecutor,airflow.providers.edge3.executors.EdgeExecutor"
CENTRE = ("postgres", "api-server", "scheduler", "dag-processor")
POLICY = REPO / "infra" / "centre" / "airflow_local_settings.py"
"""The same cluster policy a real deployment installs (infra/centre)."""
CENTRE_SLOTS = 2
"""Executor slots beyond the sites' for the centre's own tasks (start, aggregate, register)."""
QUEUES_FIELD = 256
"""edge3 keeps a worker's queues as ``str(list)`` in a 256-character column (``edge_worker``)."""
MAP_LENGTH = 1024
"""Airflow's ``[core] max_map_length``, raised to the number of sites when there are more."""
POKE_S = "10"
"""``FEDMAP_POKE_INTERVAL_S``: seconds between two pokes of ``train``. The DAG's
default, 0, suits only ``airflow dags test``. On the edge workers it must outlast the tail of the
previous poke: edge3 keys a job by its task instance and try, which every poke of a
``reschedule`` sensor shares, so a poke re-queued before the worker has reported the previous one
done gets that report ("success" for a running task), and the scheduler fails it. The tail was
5 s on 2 loaded cores (the task process's exit, then the worker's next loop)."""
TRAIN_WAIT_S = "0"
"""``FEDMAP_TRAIN_WAIT_S``: how long one ``train`` poke polls for the next prior before it gives
its worker slot back. 0: a waiting poke holding a slot for 30 s starved the sites that had not
trained yet (at 30 sites on 4 slots, map indexes 12-29 never got a slot in 6 minutes)."""
BACKOFF_MAX_S = "60"
"""``FEDMAP_POKE_BACKOFF_MAX_S``: a waiting site pokes less often the longer it has waited, so the
slots go to the sites that still have to train."""


@dataclass(frozen=True)
class Worker:
    """One edge worker process: its name ($FEDMAP_WORKER and ``--edge-hostname``, so the round
    summaries and Airflow's task host both show it) and the queues it serves."""

    name: str
    queues: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        return ["--queues", ",".join(self.queues), "--edge-hostname", self.name]


def spread(sites: Sequence[tuple[str, str]], workers: int | None) -> list[Worker]:
    """The edge workers for (site, queue) pairs: one per site, named after it, when workers is
    None or covers every site; otherwise the distinct queues dealt round-robin to ``edge-1`` ...
    ``edge-K`` (consecutive map indexes land on different workers, and the scheduler queues
    mapped instances in map-index order)."""
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    if workers is None or workers >= len(sites):
        return [Worker(site, (queue,)) for site, queue in sites]
    queues = list(dict.fromkeys(queue for _, queue in sites))
    k = min(workers, len(queues))
    if not _fits(queues, k):
        least = next(n for n in range(k, len(queues) + 1) if _fits(queues, n))
        raise ValueError(
            f"{k} workers cannot serve {len(queues)} queues: edge3 stores a worker's queues in "
            f"{QUEUES_FIELD} characters; use at least {least} workers"
        )
    width = len(str(k))
    return [Worker(f"edge-{i + 1:0{width}d}", tuple(queues[i::k])) for i in range(k)]


def _fits(queues: Sequence[str], k: int) -> bool:
    return all(len(str(list(queues[i::k]))) <= QUEUES_FIELD for i in range(k))


def default_slots(sites: int) -> int:
    """Site tasks at once: every site, up to two per core (the tasks are CPU-bound: more would
    only share the cores and add a process of about 0.3 GiB each)."""
    return max(1, min(sites, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class Scale:
    """How many sites the centre serves and how many of their tasks run at once."""

    sites: int
    slots: int

    def centre_env(self) -> dict[str, str]:
        """The scheduler, DAG processor and API server settings that follow from the scale."""
        parallelism = str(self.slots + CENTRE_SLOTS)
        return {
            "AIRFLOW__CORE__PARALLELISM": parallelism,
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": parallelism,
            "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "0",
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(MAP_LENGTH, self.sites)),
        }


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

    @staticmethod
    def on_free_ports(state: Path, **settings: Any) -> Deployment:
        """A deployment under state whose four servers listen on ports nothing uses now (tests
        and benchmarks that must not meet another stack); ``settings`` sets the other fields."""
        ports = ("api_port", "pg_port", "s3_port", "log_port")
        return Deployment(state, **{name: free_port() for name in ports}, **settings)

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
            # the DAG's sensors: the DAG processor reads the poke interval, a worker the wait
            "FEDMAP_POKE_INTERVAL_S": os.environ.get("FEDMAP_POKE_INTERVAL_S", POKE_S),
            "FEDMAP_TRAIN_WAIT_S": os.environ.get("FEDMAP_TRAIN_WAIT_S", TRAIN_WAIT_S),
            "FEDMAP_POKE_BACKOFF_MAX_S": os.environ.get("FEDMAP_POKE_BACKOFF_MAX_S", BACKOFF_MAX_S),
            # the late-report race (above) reached the centre's LocalExecutor too at load 5 with
            # 2 s; 10 s passed
            "FEDMAP_AGGREGATE_POKE_S": os.environ.get("FEDMAP_AGGREGATE_POKE_S", "10"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "XDG_CACHE_HOME": str(self.state / "cache"),
            "XDG_CONFIG_HOME": str(self.state / "config"),
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }

    def s3_connection(self, who: str) -> str:
        access, secret = self.s3_key(who)
        extra = {"endpoint_url": f"http://127.0.0.1:{self.s3_port}"}
        return json.dumps({"conn_type": "aws", "login": access, "password": secret, "extra": extra})

    def centre_env(self, scale: Scale | None = None) -> dict[str, str]:
        """The centre's processes; with the federation's scale for the long-running services."""
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
            # the API server, through which a run's summarise task sets the run's note
            "AIRFLOW_CONN_FEDMAP_AIRFLOW": json.dumps({"conn_type": "http", "host": self.api_url}),
            "FEDMAP_WORKER": "centre",
            **(scale.centre_env() if scale else {}),
        }

    def worker_env(self, worker: str) -> dict[str, str]:
        """A worker: its own home and S3 key, the API URL and JWT secret, and no database (the
        URL points nowhere, so any attempt to reach the centre's DB fails loudly). A worker that
        serves several sites holds one key for all of them: a load test on one machine, never a
        consortium, where every hospital runs its own worker."""
        return {
            **self.common(),
            "AIRFLOW_HOME": str(self.state / "workers" / worker),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://nobody@127.0.0.1:1/none",
            "AIRFLOW_CONN_FEDMAP_S3": self.s3_connection(worker),
            "FEDMAP_WORKER": worker,
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


def identities(federation: str, sites: Sequence[Site], pool: Sequence[Worker]) -> list[Identity]:
    """The centre's identity and one per worker, holding the rules of the sites whose queues it
    serves (``site_tasks.access``). A worker that serves several sites (``--workers K``) gets the
    union of their rules: each of those sites' tasks may then write the others' messages and
    read their updates. That is a load test on one machine, never a consortium, where every
    hospital runs its own worker with its own key."""
    if any(w.name == "centre" for w in pool):
        raise ValueError("a site named 'centre' would get the centre's S3 key: rename it")
    found = [centre_identity()]
    for worker in pool:
        served = [(federation, s.name) for s in sites if s.queue in worker.queues]
        found.append(site_identity(worker.name, served, union=True))
    return found


def start_s3(
    d: Deployment, federation: str, bucket: str, sites: Sequence[Site], pool: Sequence[Worker]
) -> None:
    """SeaweedFS with a key pair for the centre and one per worker, each key held to its
    identity's rules (:func:`identities`), and the federation's bucket. A server that already
    runs keeps the identities it started with."""
    who = identities(federation, sites, pool)
    keys = {identity.name: d.s3_key(identity.name) for identity in who}
    start_seaweed(d.state, bucket, who, port=d.s3_port, keys=keys)


def _spawn_env(d: Deployment, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
    """Start a service unless the very process started earlier is still running (a rerun of
    ``up`` must not start a second scheduler or a second worker for the same site)."""
    if running_pid(d.stack, name) is None:
        _spawn(d.stack, name, argv, d.state, env)


def up(
    federation: Path, d: Deployment, workers: int | None = None, slots: int | None = None
) -> list[Worker]:
    """Start the centre and the edge workers of the federation's sites (one per site, or the
    sites' queues spread over ``workers``); return the workers."""
    plan = read_federation(federation)
    pool = spread([(s.name, s.queue) for s in plan.sites], workers)
    scale = Scale(len(plan.sites), slots or default_slots(len(plan.sites)))
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
    # what each hospital does once (site-task enrol, and keygen under secure aggregation),
    # done here for all of them: own signing key pairs, the consortium's CKKS pair
    config = load_federation(d.state / "federations" / f"{plan.name}.yaml")
    trust.enrol_all(config)
    if config.federation.privacy.secure:
        privacy.keygen(config)
    start_s3(d, plan.name, plan.require_storage().bucket, plan.sites, pool)
    start_postgres(d)
    env = {**os.environ, **d.centre_env(scale)}
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True
    )
    for name, argv in (
        ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(d.api_port)]),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        _spawn_env(d, name, [str(BIN / "airflow"), *argv], d.centre_env(scale))
    _wait(
        "Airflow API server",
        lambda: healthy(f"{d.api_url}/api/v2/monitor/health"),
        120,
        d.state / "logs" / "api-server.log",
    )
    for worker in pool:
        start_worker(d, worker, scale.slots)
    return pool


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


def start_worker(d: Deployment, worker: Worker, concurrency: int) -> None:
    """Start one edge worker (unless it runs already). Its concurrency is the machine's whole
    budget of site tasks: the scheduler's parallelism bounds the total, so a job a worker receives
    starts at its next poll, wherever the busy sites sit, and never waits into the queued
    timeout."""
    (d.state / "workers" / worker.name).mkdir(parents=True, exist_ok=True)
    argv = [str(BIN / "airflow"), "edge", "worker", *worker.argv, "--concurrency", str(concurrency)]
    _spawn_env(d, f"worker-{worker.name}", argv, d.worker_env(worker.name))


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

    from site_tasks.local.demo import DATA
    from site_tasks.local.demo_data import write_data

    if not (DATA / "site-03").exists():
        write_data(DATA, seed=0)
    sites = ("site-01", "site-02", "site-03")
    body = {
        "name": "edge-demo",
        "task": {"contract": "demo_hospitals", "model": "mlp"},
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


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def api(d: Deployment, method: str, path: str, body: object = None) -> Any:
    """One call of the centre's REST API, as an admin (``simple_auth_manager_all_admins``)."""
    with urllib.request.urlopen(f"{d.api_url}/auth/token", timeout=30) as reply:
        token = json.load(reply)["access_token"]
    request = urllib.request.Request(
        f"{d.api_url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


def sql(d: Deployment, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one query on the deployment's Airflow metadata database."""
    import psycopg2  # type: ignore[import-untyped]

    connection = psycopg2.connect(
        host="127.0.0.1", port=d.pg_port, user="postgres", dbname="airflow"
    )
    try:
        with connection.cursor() as cur:
            cur.execute(query, tuple(params))
            return list(cur.fetchall())
    finally:
        connection.close()


def centre_object(d: Deployment, bucket: str, key: str) -> tuple[bytes, float] | None:
    """An object of the deployment's bucket, read with the centre's key, with the time it was
    written (epoch seconds); None when it is not there. The S3 server enforces identities, so
    tools read through it as the centre would, never its data folder."""
    from botocore.exceptions import ClientError

    from fedmap.schema import Storage
    from site_tasks.storage import S3Store

    access, secret = d.s3_key("centre")
    url = f"http://127.0.0.1:{d.s3_port}"
    store = S3Store(Storage(bucket, url, access_key_id=access, secret_access_key=secret))
    try:
        response = store.client.get_object(Bucket=bucket, Key=key)
    except ClientError:
        return None
    return response["Body"].read(), response["LastModified"].timestamp()


def wait_until(what: str, check: Callable[[], object], timeout: float) -> None:
    """Poll check() every second until it is truthy; TimeoutError naming what after timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m site_tasks.local.edge",
        description="A multi-process federation on this machine: PostgreSQL, the Airflow API "
        "server, scheduler and DAG processor, an S3 server, and edge workers for the sites.",
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
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int("FEDMAP_FED_WORKERS"),
        help="spread the sites' queues over this many edge workers (default: one per site)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=_env_int("FEDMAP_FED_SLOTS"),
        help="site tasks running at once (default: every site, at most two per core)",
    )
    args = parser.parse_args(argv)
    d = Deployment(args.state.resolve())
    if args.command == "up":
        began = time.monotonic()
        federation = args.federation.resolve() if args.federation else example_federation(d)
        pool = up(federation, d, args.workers, args.slots)
        print(f"centre: {d.api_url} (Airflow UI and edge API), PostgreSQL :{d.pg_port}")
        for worker in pool:
            print(f"worker {worker.name}: queues {', '.join(worker.queues)}")
        print(f"{len(pool)} worker processes; logs in {d.state / 'logs'}")
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
