"""Fixtures of the DAG tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def airflow_db() -> Iterator[None]:
    """A migrated SQLite metadata DB under $AIRFLOW_HOME (set by tests/conftest.py)."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ)
    yield
