"""``bench/real.py``: the page, the target verdicts and the equity sections on hand-made records
(no training), then one tiny end-to-end run of its command line on the real heart-disease sites."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# bench/ is a folder of scripts run as ``python -m bench.real`` from the repository root, not an
# installed package: make it importable when pytest runs from its console script.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.flamby import FLAMBY, HEART, TCGA  # noqa: E402
from bench.real import (  # noqa: E402
    comparison_table,
    equity_sections,
    main,
    metric_of,
    page,
    plot,
    seed_means,
    site_means,
    targets,
)
from fedmap.schema import Federation, read_federation  # noqa: E402
from site_tasks.local.sources import heart_disease_sites  # noqa: E402

SITES = ("cleveland", "hungarian", "switzerland", "va")
# method -> site -> score at seeds 42 and 43
SCORES = {
    "individual": {
        "cleveland": (0.70, 0.72),
        "hungarian": (0.74, 0.76),
        "switzerland": (0.8125, 0.8125),
        "va": (0.60, 0.64),
    },
    # per-seed means 0.78 and 0.80: mean 0.79 >= 0.76, every site above its local model
    "fedmap-gaussian": {
        "cleveland": (0.80, 0.82),
        "hungarian": (0.78, 0.80),
        "switzerland": (0.875, 0.875),
        "va": (0.665, 0.705),
    },
    # mean 0.8125 >= 0.76, but Switzerland below its local model
    "fedmap-icnn": {
        "cleveland": (0.85, 0.85),
        "hungarian": (0.85, 0.85),
        "switzerland": (0.75, 0.75),
        "va": (0.80, 0.80),
    },
    # equal to the local model everywhere (not below it), mean 0.7138 < 0.76
    "fedmap-diagonal": {
        "cleveland": (0.70, 0.72),
        "hungarian": (0.74, 0.76),
        "switzerland": (0.8125, 0.8125),
        "va": (0.60, 0.64),
    },
    # never judged against the target
    "fedavg": {
        "cleveland": (0.50, 0.50),
        "hungarian": (0.50, 0.50),
        "switzerland": (0.50, 0.50),
        "va": (0.50, 0.50),
    },
}


def make_records(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    metric: str = "accuracy",
    model: str = "logreg",
) -> list[dict[str, Any]]:
    return [
        {
            "federation": "heart_disease",
            "model": model,
            "method": method,
            "seed": 42 + i,
            "site": site,
            metric: value,
        }
        for method, per_site in scores.items()
        for site, values in per_site.items()
        for i, value in enumerate(values)
    ]


ROWS = make_records(SCORES)


@pytest.fixture(scope="module")
def heart() -> Federation:
    return read_federation(ROOT / "federations" / "heart_disease.yaml")


def test_metric_of(heart: Federation) -> None:
    assert metric_of(heart) == "accuracy"
    assert metric_of(read_federation(ROOT / "federations" / "tcga_brca.yaml")) == "c_index"
    assert set(FLAMBY) == {"heart_disease", "tcga_brca"}


def test_site_and_seed_means() -> None:
    sites = site_means(ROWS, "accuracy")
    assert sites[("logreg", "individual")]["va"] == [0.60, 0.64]
    seeds = seed_means(ROWS, "accuracy")
    assert seeds[("logreg", "fedmap-gaussian")] == pytest.approx([0.78, 0.80])
    assert seeds[("logreg", "fedavg")] == pytest.approx([0.5, 0.5])


def test_targets_verdicts() -> None:
    table, numbers = targets(ROWS, "accuracy", HEART)
    assert set(numbers) == {
        "logreg/fedmap-gaussian",
        "logreg/fedmap-icnn",
        "logreg/fedmap-diagonal",
    }
    assert numbers["logreg/fedmap-gaussian"] == {
        "mean": pytest.approx(0.79),
        "met": True,
        "below_local": [],
    }
    assert numbers["logreg/fedmap-icnn"] == {
        "mean": pytest.approx(0.8125),
        "met": False,
        "below_local": ["switzerland"],
    }
    diagonal = numbers["logreg/fedmap-diagonal"]
    assert (diagonal["met"], diagonal["below_local"]) == (False, [])
    assert diagonal["mean"] == pytest.approx(statistics.fmean([0.7131250, 0.7331250]))
    lines = table.splitlines()
    assert lines[0] == "| model | method | mean accuracy | target | sites | verdict |"
    assert (
        "| logreg | fedmap-gaussian | 0.7900 | 0.76 | sites below their local model: none | met |"
        in lines
    )
    assert (
        "| logreg | fedmap-icnn | 0.8125 | 0.76 | sites below their local model: switzerland "
        "| **missed** |" in lines
    )
    assert any(
        line.startswith("| logreg | fedmap-diagonal |") and "**missed**" in line for line in lines
    )
    assert not any("fedavg" in line for line in lines)


def test_targets_per_model_against_that_models_local_run() -> None:
    """The mlp rows are judged against the mlp Individual run, not the logreg one."""
    mlp = make_records(
        {
            "individual": {s: (0.9, 0.9) for s in SITES},
            "fedmap-gaussian": {s: (0.85, 0.85) for s in SITES},
        },
        model="mlp",
    )
    _, numbers = targets(ROWS + mlp, "accuracy", HEART)
    assert numbers["mlp/fedmap-gaussian"] == {
        "mean": pytest.approx(0.85),
        "met": False,
        "below_local": list(SITES),
    }
    assert numbers["logreg/fedmap-gaussian"]["met"] is True


def test_tcga_target_ignores_sites_below_local() -> None:
    """TCGA's target is the mean C-index alone (0.80), reported with the spread."""
    rows = make_records(
        {
            "individual": {"region-0": (0.7,), "region-1": (0.9,)},
            "fedmap-gaussian": {"region-0": (0.85,), "region-1": (0.8,)},
        },
        metric="c_index",
    )
    table, numbers = targets(rows, "c_index", TCGA)
    assert numbers["logreg/fedmap-gaussian"] == {
        "mean": pytest.approx(0.825),
        "met": True,
        "below_local": ["region-1"],
    }
    assert "| mean c_index |" in table.splitlines()[0]
    rows_low = make_records(
        {"individual": {"region-0": (0.7,)}, "fedmap-gaussian": {"region-0": (0.79,)}},
        metric="c_index",
    )
    assert targets(rows_low, "c_index", TCGA)[1]["logreg/fedmap-gaussian"]["met"] is False


def test_comparison_table() -> None:
    lines = comparison_table(ROWS, "accuracy", HEART, SITES).splitlines()
    assert lines[0] == (
        "| model | method | cleveland | hungarian | switzerland | va | **mean of 4 sites** |"
    )
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert (
        "| logreg | fedmap-gaussian | 0.8100 ± 0.0141 | 0.7900 ± 0.0141 | 0.8750 ± 0.0000 | "
        "0.6850 ± 0.0283 | **0.7900 ± 0.0141** |" in lines
    )
    assert "| FLamby | FedAvg | 0.7308 | 0.7191 | 0.6500 | 0.6400 | **0.6850** |" in lines
    assert len(lines) == 2 + len(SCORES) + len(HEART.rows)


def test_equity_sections() -> None:
    text = equity_sections(ROWS, "accuracy")
    assert text.startswith("### logreg\n")
    assert "Gain of each site over its local model, accuracy (pp):" in text
    assert "| fedmap-gaussian | +10.00 | +4.00 | +6.25 | +6.50 |" in text
    assert "| fedmap-icnn | +14.00 | +10.00 | -6.25 | +18.00 |" in text
    assert "Worst-served site (lowest local accuracy): **va**." in text
    survival = make_records(
        {"individual": {"r0": (0.6,), "r1": (0.7,)}, "fedmap": {"r0": (0.65,), "r1": (0.7,)}},
        metric="c_index",
    )
    text = equity_sections(survival, "c_index")
    assert "over its local model, c-index:" in text and "(pp)" not in text
    assert "| fedmap | +0.050 | +0.000 |" in text


def test_page(heart: Federation) -> None:
    text = page(heart, ROWS, HEART, 30.0, [42, 43])
    assert text.startswith("# Fed-Heart-Disease: FedMAP against FLamby\n")
    assert "Generated by `dvc repro benchmark_real@heart_disease`" in text
    assert "in 0.5 min" in text
    algo = heart.algorithm
    assert (
        f"{algo.rounds} rounds of\n{algo.epochs} local epoch(s), batch size {algo.batch_size}, "
        f"Adam with lr {algo.lr}" in text
    )
    assert f"sigma^2 =\n{algo.variance} and input_variance = inf" in text
    assert "Seeds [42, 43]" in text
    assert "## accuracy per site" in text
    assert "![per-site accuracy](heart_disease.png)" in text
    assert HEART.target_text in text and HEART.setup in text and "## Notes" in text
    assert "| logreg | fedmap-icnn | 0.8125 | 0.76 |" in text
    assert "### logreg" in text


def test_plot(tmp_path: Path) -> None:
    path = tmp_path / "heart_disease.png"
    plot(ROWS, "accuracy", SITES, path, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["heart_disease.png"]


def test_main_end_to_end(tmp_path: Path) -> None:
    """One seed, one round, two methods on the real heart-disease sites."""
    data = yaml.safe_load((ROOT / "federations" / "heart_disease.yaml").read_text())
    for folder in heart_disease_sites(ROOT / "datasets" / "fed_heart_disease", tmp_path / "d"):
        data["sites"][folder.name]["data"] = str(folder)
    data["algorithm"].update(rounds=1, epochs=1)
    federation = tmp_path / "heart_disease.yaml"
    federation.write_text(yaml.safe_dump(data, sort_keys=False))
    config = tmp_path / "params.yaml"
    methods = {"individual": {"method": "individual"}, "fedmap-gaussian": {"method": "fedmap"}}
    real = {
        "seeds": [42, 43],
        "jobs": 1,
        "methods": methods,
        "heart_disease": {"models": ["logreg"]},
    }
    config.write_text(yaml.safe_dump({"real": real}, sort_keys=False))
    out = tmp_path / "results"
    argv = ["--federation", str(federation), "--config", str(config), "--out", str(out)]
    assert main([*argv, "--seeds", "3"]) == 0
    rows = json.loads((out / "heart_disease_results.json").read_text())
    assert [(r["method"], r["site"], r["seed"]) for r in rows] == [
        (m, s, 3) for m in ("individual", "fedmap-gaussian") for s in SITES
    ]
    metrics = json.loads((out / "heart_disease_metrics.json").read_text())
    assert set(metrics) == {"mean", "targets", "seconds"}
    assert set(metrics["mean"]) == {"logreg/individual", "logreg/fedmap-gaussian"}
    expected = statistics.fmean(r["accuracy"] for r in rows if r["method"] == "individual")
    assert metrics["mean"]["logreg/individual"] == pytest.approx(expected)
    verdict = metrics["targets"]["logreg/fedmap-gaussian"]
    assert verdict["met"] == (verdict["mean"] >= 0.76 and not verdict["below_local"])
    text = (out / "heart_disease.md").read_text()
    assert "Seeds [3]" in text and "1 rounds of" in text
    assert (out / "heart_disease.png").read_bytes()[:4] == b"\x89PNG"


def test_the_page_carries_the_clinical_metrics_of_a_binary_task() -> None:
    from bench.real import clinical_section

    rows = [
        {
            "federation": "h",
            "model": model,
            "method": "fedmap",
            "seed": seed,
            "site": site,
            "n_scored": 10,
            "accuracy": 0.8,
            "balanced_accuracy": 0.7,
            "roc_auc": 0.8 + 0.1 * seed,
            "auprc": 0.6,
            "brier": 0.1,
            "ece": 0.05,
        }
        for model in ("logreg", "mlp")
        for seed in (0, 1)
        for site in ("a", "b")
    ]
    text = clinical_section(rows)
    assert text.startswith("## Clinical metrics") and "### logreg" in text and "### mlp" in text
    assert "| fedmap | 0.850 ± 0.071 | 0.600 ± 0.000 | 0.100 ± 0.000 | 0.050 ± 0.000 |" in text
    survival = [{**r, "c_index": 0.7} for r in rows]
    for r in survival:
        for m in ("accuracy", "balanced_accuracy", "roc_auc", "auprc", "brier", "ece"):
            del r[m]
    assert clinical_section(survival) == ""
