"""results.json, summary tables and their statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedmap.experiment import SiteRecord
from fedmap.report import (
    mean_std,
    scenario_table,
    site_average,
    summary_markdown,
    write_atomic,
    write_results,
)


def _records() -> list[SiteRecord]:
    rows = []
    for seed, (a1, a2, b1, b2) in enumerate([(0.8, 0.6, 0.5, 0.7), (0.9, 0.7, 0.5, math.nan)]):
        rows += [
            SiteRecord("label-skew", "fedmap", seed, "site-01", a1, a1, a1),
            SiteRecord("label-skew", "fedmap", seed, "site-02", a2, a2, a2),
            SiteRecord("label-skew", "individual", seed, "site-01", b1, b1, b1),
            SiteRecord("label-skew", "individual", seed, "site-02", b2, b2, b2),
        ]
    return rows


def test_mean_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    m, s = mean_std([1.0, math.nan, 3.0])
    assert m == 2.0
    assert s == pytest.approx(math.sqrt(2.0))
    assert all(math.isnan(v) for v in mean_std([math.nan]))


def test_site_average_ignores_nan() -> None:
    avg = site_average(_records(), "accuracy")
    assert avg[("label-skew", "fedmap", 0)] == pytest.approx(0.7)
    assert avg[("label-skew", "fedmap", 1)] == pytest.approx(0.8)
    assert avg[("label-skew", "individual", 1)] == pytest.approx(0.5)


def test_scenario_table() -> None:
    lines = scenario_table(_records(), "label-skew").splitlines()
    assert lines[0] == "| site | fedmap | individual |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| site-01 | 85.00 ± 7.07 | 50.00 ± 0.00 |"
    assert lines[3] == "| site-02 | 65.00 ± 7.07 | 70.00 ± 0.00 |"
    # site-averages per seed: fedmap 70, 80; individual 60, 50
    assert lines[4] == "| **average** | **75.00 ± 7.07** | **55.00 ± 7.07** |"
    assert len(lines) == 5


def test_summary_markdown_has_every_metric_and_timing() -> None:
    text = summary_markdown(_records(), {"fedmap": 0.1234, "individual": 0.05})
    assert "## label-skew" in text
    assert "mean ± std over seeds [0, 1]" in text
    for label in ("### accuracy", "### balanced accuracy", "### ROC-AUC"):
        assert label in text
    assert "| fedmap | 0.123 |" in text and "| individual | 0.050 |" in text


def test_write_results_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "results.json"
    records = _records()[:2]
    write_results(records, path)
    assert json.loads(path.read_text()) == [r.as_dict() for r in records]
    write_atomic(path, "x")
    assert path.read_text() == "x"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
