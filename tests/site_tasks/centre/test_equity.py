"""The centre's equity summary, from the evaluations the sites published."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from site_tasks.centre.equity import equity_summary, read_evaluations
from site_tasks.federation import load_federation
from site_tasks.local.demo import write_federation
from site_tasks.local.stack import Stack
from site_tasks.storage import Keys
from tests.memory_store import MemoryStore


def _evaluation(own: float, local: float, auc: float | None = 0.9) -> bytes:
    scores = {"accuracy": own, "roc_auc": auc}
    body = {"personalised": scores, "prior": scores, "local": {"accuracy": local}}
    return json.dumps({**body, "primary_metric": "accuracy"}).encode()


def test_gains_the_worst_served_site_and_the_spread(tmp_path: Path) -> None:
    config = load_federation(write_federation(Stack(tmp_path), 3, 0, tmp_path / "data"))
    store, keys = MemoryStore(), Keys.of(config)
    store.put(keys.evaluation("site-01"), _evaluation(0.90, 0.88))
    store.put(keys.evaluation("site-04"), _evaluation(0.80, 0.70, auc=None))  # null: NaN again
    store.put(keys.evaluation("site-12"), _evaluation(0.75, 0.77))
    found = read_evaluations(config, store)
    assert sorted(found) == ["site-01", "site-04", "site-12"]  # the sites without one are absent
    assert math.isnan(found["site-04"]["personalised"]["roc_auc"])
    summary = equity_summary(config, found)
    assert summary is not None and summary.metric == "accuracy"
    gains = summary.as_dict()["gains"]
    assert gains == pytest.approx({"site-01": 0.02, "site-04": 0.10, "site-12": -0.02})
    # the worst-served site is the one whose local model scores lowest, whatever it gained
    assert summary.fedmap.worst_served == "site-04"
    assert summary.fedmap.min_gain == pytest.approx(-0.02)
    assert summary.fedmap.spread_range == pytest.approx(0.15)
    assert summary.local.spread_range == pytest.approx(0.18)
    assert "site-12" in summary.markdown


def test_no_evaluation_no_summary(tmp_path: Path) -> None:
    config = load_federation(write_federation(Stack(tmp_path), 3, 0, tmp_path / "data"))
    assert equity_summary(config, read_evaluations(config, MemoryStore())) is None
