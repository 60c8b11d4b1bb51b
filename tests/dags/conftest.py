"""Fixtures of the DAG tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest


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
