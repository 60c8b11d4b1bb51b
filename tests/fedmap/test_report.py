"""results.json, summary tables and their statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedmap.experiment import Run, SiteRecord
from fedmap.metrics import TaskScores, reliability
from fedmap.report import (
    clinical_markdown,
    mean_std,
    plot_reliability,
    pooled_reliability,
    scenario_table,
    site_average,
    summary_markdown,
    write_atomic,
    write_results,
)
from fedmap.simulator import SimulationResult


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


def _clinical(auc: float, ap: float, brier: float, ece: float) -> dict[str, float]:
    return {
        "accuracy": 0.5,
        "balanced_accuracy": 0.5,
        "roc_auc": auc,
        "auprc": ap,
        "brier": brier,
        "ece": ece,
    }


def _clinical_records() -> list[SiteRecord]:
    values = {
        ("fedmap", 0): [(0.9, 0.8, 0.10, 0.05), (0.7, 0.6, 0.20, 0.15)],
        ("fedmap", 1): [(0.8, 0.7, 0.12, 0.07), (0.6, 0.5, 0.22, 0.13)],
        ("individual", 0): [(0.6, 0.5, 0.25, 0.20), (0.5, 0.4, 0.30, 0.10)],
    }
    return [
        SiteRecord("heart", method, seed, site, _clinical(*v))
        for (method, seed), pair in values.items()
        for site, v in zip(("site-01", "site-02"), pair, strict=True)
    ]


def test_clinical_markdown_per_method_and_per_site() -> None:
    text = clinical_markdown(_clinical_records())
    lines = text.splitlines()
    assert lines[0] == "## clinical metrics"
    assert "| method | ROC-AUC | AUPRC | Brier score | ECE |" in lines
    # fedmap's site-averages: seed 0 (0.80, 0.70, 0.15, 0.10), seed 1 (0.70, 0.60, 0.17, 0.10)
    assert "| fedmap | 0.750 ± 0.071 | 0.650 ± 0.071 | 0.160 ± 0.014 | 0.100 ± 0.000 |" in lines
    assert "| individual | 0.550 ± 0.000 | 0.450 ± 0.000 | 0.275 ± 0.000 | 0.150 ± 0.000 |" in lines
    # two sites: the per-site table too, mean ± std over seeds
    assert "| site | method | ROC-AUC | AUPRC | Brier score | ECE |" in lines
    assert (
        "| site-01 | fedmap | 0.850 ± 0.071 | 0.750 ± 0.071 | 0.110 ± 0.014 | 0.060 ± 0.014 |"
        in lines
    )
    assert (
        "| site-02 | individual | 0.500 ± 0.000 | 0.400 ± 0.000 | 0.300 ± 0.000 | 0.100 ± 0.000 |"
        in lines
    )
    short = clinical_markdown(_clinical_records(), per_site_limit=1)
    assert "| site | method |" not in short and "| fedmap | 0.750 ± 0.071 |" in short
    assert clinical_markdown(_survival_records()) == ""
    assert clinical_markdown(_records()) == ""  # records without AUPRC, Brier and ECE


def test_summary_marks_the_lower_is_better_metrics() -> None:
    text = summary_markdown(_clinical_records(), {"fedmap": 0.01})
    assert "### AUPRC\n" in text
    assert "### Brier score (lower is better)" in text and "### ECE (lower is better)" in text
    assert "### ROC-AUC\n" in text


def _result(method: str, seed: int, curves: dict[str, list[tuple[int, float]]]) -> SimulationResult:
    """A binary result whose sites' reliability curves come from (label, probability) rows."""
    sites = tuple(curves)
    scores = dict.fromkeys(
        ("accuracy", "balanced_accuracy", "roc_auc", "auprc", "brier", "ece"), 0.5
    )
    return SimulationResult(
        method,
        seed,
        sites[0],
        sites,
        {s: TaskScores("binary", scores) for s in sites},
        [[0.5] * len(sites)],
        0.1,
        reliability={
            s: reliability([y for y, _ in rows], [p for _, p in rows]) for s, rows in curves.items()
        },
    )


def test_pooled_reliability_adds_the_seeds() -> None:
    results = [
        (Run("x", "fedmap", 0), _result("fedmap", 0, {"a": [(1, 0.92), (0, 0.14)]})),
        (Run("x", "fedmap", 1), _result("fedmap", 1, {"a": [(0, 0.98), (0, 0.11)]})),
        (Run("x", "individual", 0), _result("individual", 0, {"a": [(1, 0.55), (1, 0.56)]})),
    ]
    pooled = pooled_reliability(results)
    assert list(pooled) == ["fedmap", "individual"]
    fedmap = pooled["fedmap"]["a"]
    assert fedmap.counts == (0, 2, 0, 0, 0, 0, 0, 0, 0, 2)
    assert fedmap.observed[1] == 0.0 and fedmap.observed[9] == 0.5
    assert fedmap.mean_predicted[1] == pytest.approx(0.125)
    assert fedmap.mean_predicted[9] == pytest.approx(0.95)
    assert pooled["individual"]["a"].counts[5] == 2


def test_plot_reliability_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    results = []
    for method in ("fedmap", "individual"):
        for seed in (0, 1):
            rows = {
                site: [(int(rng.random() < q), float(q)) for q in rng.random(50)]
                for site in ("north", "south", "east")
            }
            results.append((Run("x", method, seed), _result(method, seed, rows)))
    path = tmp_path / "deep" / "reliability.png"
    plot_reliability(results, path, "x: reliability")
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in path.parent.iterdir()) == ["reliability.png"]
    survival = SimulationResult("fedmap", 0, "a", ("a",), {}, [], 0.1, "survival")
    with pytest.raises(ValueError, match="no reliability curves"):
        plot_reliability([(Run("x", "fedmap", 0), survival)], tmp_path / "r.png", "x")
