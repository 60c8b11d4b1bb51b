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


def _binary(a: float) -> dict[str, float]:
    return {"accuracy": a, "balanced_accuracy": a, "roc_auc": a}


def _records() -> list[SiteRecord]:
    rows = []
    for seed, (a1, a2, b1, b2) in enumerate([(0.8, 0.6, 0.5, 0.7), (0.9, 0.7, 0.5, math.nan)]):
        rows += [
            SiteRecord("label-skew", "fedmap", seed, "site-01", _binary(a1)),
            SiteRecord("label-skew", "fedmap", seed, "site-02", _binary(a2)),
            SiteRecord("label-skew", "individual", seed, "site-01", _binary(b1)),
            SiteRecord("label-skew", "individual", seed, "site-02", _binary(b2)),
        ]
    return rows


def _survival_records() -> list[SiteRecord]:
    c = {("fedmap", 0): (0.70, 0.60), ("fedmap", 1): (0.80, 0.50), ("individual", 0): (0.55, 0.65)}
    return [
        SiteRecord("tcga-brca", method, seed, site, {"c_index": value})
        for (method, seed), pair in c.items()
        for site, value in zip(("region-0", "region-1"), pair, strict=True)
    ]


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
    assert "C-index" not in text
    assert "| fedmap | 0.123 |" in text and "| individual | 0.050 |" in text


def test_survival_records_are_tabulated_by_c_index() -> None:
    records = _survival_records()
    avg = site_average(records, "c_index")
    assert avg[("tcga-brca", "fedmap", 0)] == pytest.approx(0.65)
    assert avg[("tcga-brca", "fedmap", 1)] == pytest.approx(0.65)
    assert avg[("tcga-brca", "individual", 0)] == pytest.approx(0.60)
    lines = scenario_table(records, "tcga-brca", "c_index").splitlines()
    assert lines[2] == "| region-0 | 75.00 ± 7.07 | 55.00 ± 0.00 |"
    assert lines[3] == "| region-1 | 55.00 ± 7.07 | 65.00 ± 0.00 |"
    assert lines[4] == "| **average** | **65.00 ± 0.00** | **60.00 ± 0.00** |"
    text = summary_markdown(records, {"fedmap": 0.01})
    assert "### C-index" in text
    assert "### accuracy" not in text and "ROC-AUC" not in text
    with pytest.raises(KeyError, match=r"no 'accuracy'.*c_index"):
        site_average(records, "accuracy")


def test_mixed_tasks_each_get_their_own_tables() -> None:
    text = summary_markdown([*_records(), *_survival_records()], {"fedmap": 0.01})
    binary, survival = text.split("## tcga-brca")
    assert "### accuracy" in binary and "C-index" not in binary
    assert "### C-index" in survival and "accuracy" not in survival


def test_write_results_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "results.json"
    records = [*_records()[:2], _survival_records()[0]]
    write_results(records, path)
    assert json.loads(path.read_text()) == [r.as_dict() for r in records]
    assert list(json.loads(path.read_text())[2]) == [
        "scenario",
        "method",
        "seed",
        "site",
        "c_index",
    ]
    write_atomic(path, "x")
    assert path.read_text() == "x"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
