"""Fixtures of the DAG tests."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a DAG test of more than about a minute (deselect with -m 'not slow')"
    )


@pytest.fixture(scope="module")
def airflow_db() -> Iterator[None]:
    """A migrated SQLite metadata DB under $AIRFLOW_HOME (set by tests/conftest.py)."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ)
    yield


DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "fedmap_federation.py"


def _load_dags(folder: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the DAG file afresh with federations read from folder."""
    monkeypatch.setenv("FEDMAP_FEDERATIONS_DIR", str(folder))
    monkeypatch.setenv("FEDMAP_RETRY_DELAY_S", "0.1")
    monkeypatch.setenv("FEDMAP_TRAIN_RETRIES", "1")
    monkeypatch.setenv("FEDMAP_AGGREGATE_RETRIES", "0")  # a failed aggregate stays failed
    spec = importlib.util.spec_from_file_location(f"fedmap_dags_{uuid.uuid4().hex}", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_dags() -> Callable[[Path, pytest.MonkeyPatch], ModuleType]:
    """``load_dags(folder, monkeypatch)``: the DAG module over the federations in folder."""
    return _load_dags


@pytest.fixture
def airflow_api(tmp_path: Path) -> Iterator[Callable[[Mapping[str, str]], str]]:
    """``airflow_api(env)``: Airflow's API server (``airflow api-server``, one worker) on
    127.0.0.1 at ``env``'s ``AIRFLOW__API__PORT`` and over its ``AIRFLOW_HOME``; returns its URL
    once healthy. Its whole process group is stopped at the end of the test."""
    from site_tasks.local.stack import healthy

    started: list[subprocess.Popen[bytes]] = []

    def start(env: Mapping[str, str]) -> str:
        port = env["AIRFLOW__API__PORT"]
        url = f"http://127.0.0.1:{port}"
        airflow = str(Path(sys.executable).with_name("airflow"))
        with (tmp_path / f"api-server-{port}.log").open("wb") as log:
            proc = subprocess.Popen(
                [airflow, "api-server", "-H", "127.0.0.1", "-p", port, "-w", "1"],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers share its process group
            )
        started.append(proc)
        deadline = time.monotonic() + 120
        while not healthy(f"{url}/api/v2/monitor/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (tmp_path / f"api-server-{port}.log").read_text()[-2000:]
                raise RuntimeError(f"airflow api-server did not start:\n{tail}")
            time.sleep(0.3)
        return url

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its leader
            os.killpg(proc.pid, signal.SIGKILL)
