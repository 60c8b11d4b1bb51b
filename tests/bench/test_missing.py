"""``bench/missing.py``: the target verdicts and the sigma^2 choice on hand-made records (no
training), the APACHE IVa join on a tiny synthetic source, then one tiny end-to-end run of its
command line on tiny synthetic site folders (one round, one seed)."""

from __future__ import annotations

import csv
import gzip
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# bench/ is a folder of scripts run as ``python -m bench.missing`` from the repository root, not
# an installed package: make it importable when pytest runs from its console script.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.missing  # noqa: E402
from bench.missing import (  # noqa: E402
    MissingConfig,
    apache_join,
    apache_records,
    complete_cases,
    main,
)
from bench.missing_report import choose, headline_table, seed_means, tuned_name, verdicts  # noqa: E402
from fedmap.metrics import auprc, brier, ece, roc_auc  # noqa: E402
from fedmap.schema import ConfigError, TabularTask, from_mapping  # noqa: E402

SITES = ("a", "b")


def make_records(
    strategy: str, scores: Mapping[str, Mapping[str, Sequence[float]]]
) -> list[dict[str, Any]]:
    """method -> site -> AUROC at seeds 0, 1, ..."""
    return [
        {"strategy": strategy, "method": method, "seed": i, "site": site, "roc_auc": value}
        for method, per_site in scores.items()
        for site, values in per_site.items()
        for i, value in enumerate(values)
    ]


# median: FedMAP's mean 0.80 >= max(0.70, 0.78), site b 0.005 below Individual (within 0.01)
MET = make_records(
    "median",
    {
        "individual": {"a": (0.60, 0.60), "b": (0.805, 0.805)},
        "fedavg": {"a": (0.76, 0.80), "b": (0.78, 0.78)},
        "fedmap": {"a": (0.79, 0.81), "b": (0.80, 0.80)},
    },
)
# median+indicators: mean 0.79 < FedAvg's 0.80, and site b 0.03 below Individual
MISSED = make_records(
    "median+indicators",
    {
        "individual": {"a": (0.60, 0.60), "b": (0.83, 0.83)},
        "fedavg": {"a": (0.80, 0.80), "b": (0.80, 0.80)},
        "fedmap": {"a": (0.78, 0.78), "b": (0.80, 0.80)},
        "fedmap-untuned": {"a": (0.90, 0.90), "b": (0.825, 0.825)},
    },
)


def test_verdicts_met_and_missed() -> None:
    table, numbers = verdicts(MET + MISSED)
    assert numbers["median/fedmap"] == {
        "fedmap": pytest.approx(0.80),
        "bar": pytest.approx(0.78),
        "mean_ok": True,
        "below_individual": {},
        "met": True,
    }
    missed = numbers["median+indicators/fedmap"]
    assert (missed["mean_ok"], missed["met"]) == (False, False)
    assert missed["fedmap"] == pytest.approx(0.79)
    assert missed["bar"] == pytest.approx(0.80)
    assert list(missed["below_individual"]) == ["b"]
    assert missed["below_individual"]["b"] == pytest.approx(-0.03)
    # the untuned run is judged too: above the bar, and b within 0.01 of Individual
    assert numbers["median+indicators/fedmap-untuned"]["met"] is True
    lines = table.splitlines()
    assert "| median | fedmap | 0.8000 | 0.7025 | 0.7800 | yes | none | met |" in lines
    assert (
        "| median+indicators | fedmap | 0.7900 | 0.7150 | 0.8000 | **no** | b (-0.0300) "
        "| **missed** |" in lines
    )


def test_verdicts_mean_alone_is_not_enough() -> None:
    """FedMAP above both means but one site 0.02 below its Individual AUROC: missed."""
    rows = make_records(
        "median",
        {
            "individual": {"a": (0.70,), "b": (0.70,)},
            "fedavg": {"a": (0.70,), "b": (0.70,)},
            "fedmap": {"a": (0.90,), "b": (0.68,)},
        },
    )
    verdict = verdicts(rows)[1]["median/fedmap"]
    assert (verdict["mean_ok"], verdict["met"]) == (True, False)
    assert verdict["below_individual"] == {"b": pytest.approx(-0.02)}


def test_verdicts_skip_drop_and_need_both_baselines() -> None:
    drop = make_records("drop", {"individual": {"a": (0.5,)}, "fedavg": {"a": (0.5,)}})
    drop += make_records("drop", {"fedmap": {"a": (0.9,)}})
    alone = make_records("median", {"fedmap": {"a": (0.9,)}, "individual": {"a": (0.5,)}})
    assert verdicts(drop + alone)[1] == {}


def test_choose_on_tuning_records() -> None:
    """The best mean over the two imputing strategies wins; a tie goes to the first listed."""
    rows = []
    for variance, (median, indicators) in {0.5: (0.80, 0.70), 1.0: (0.76, 0.76)}.items():
        for strategy, value in (("median", median), ("median+indicators", indicators)):
            rows += make_records(strategy, {tuned_name(variance): {"a": (value, value)}})
    best, table = choose(rows, [0.5, 1.0])
    assert best == 1.0
    assert table[0.5] == {
        "median": pytest.approx(0.80),
        "median+indicators": pytest.approx(0.70),
        "mean": pytest.approx(0.75),
    }
    tie = [r for r in rows if r["method"] == tuned_name(1.0)]
    tie += [{**r, "method": tuned_name(2.0)} for r in tie]
    assert choose(tie, [2.0, 1.0])[0] == 2.0


def test_config_checks() -> None:
    assert from_mapping(MissingConfig, {"grid": [1, 10], "variance": 1}).variance == 1
    with pytest.raises(ConfigError, match="share"):
        from_mapping(MissingConfig, {"seeds": [1, 2], "tuning_seeds": [2]})
    with pytest.raises(ConfigError, match="not in the grid"):
        from_mapping(MissingConfig, {"grid": [1.0], "variance": 2.0})
    with pytest.raises(ConfigError, match=r"missing\.rounds"):
        from_mapping(MissingConfig, {"rounds": 3}, "missing")


# ---- APACHE IVa ------------------------------------------------------------------------------

APACHE_HEADER = ["patientunitstayid", "apacheversion", "predictedhospitalmortality"]


def write_apache(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(APACHE_HEADER)
        writer.writerows(rows)
    return path


def write_site(folder: Path, train: Sequence[Sequence[Any]], val: Sequence[Sequence[Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("val.csv", val)):
        with (folder / name).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["patientunitstayid", "age", "lab", "died"])
            writer.writerows(rows)
    return folder


RECIPE = TabularTask(target="died", drop=("patientunitstayid",), missing=("-1",))


def test_apache_join(tmp_path: Path) -> None:
    source = write_apache(
        tmp_path / "apache.csv.gz",
        [
            ("1", "IV", "0.99"),  # APACHE IV, not IVa: ignored
            ("1", "IVa", "0.2"),
            ("2", "IVa", "0.9"),
            ("3", "IVa", "-1"),  # not computed
            ("4", "IVa", "0.1"),
            ("5", "IVa", "0.3"),  # a stay of another site's train split
        ],
    )
    # stay 6 has no APACHE row; stay 4's lab is missing (-1), stay 2's age is empty
    val = [(1, 60, 1.0, 0), (2, "", 2.0, 1), (3, 70, 3.0, 1), (4, 80, -1, 0), (6, 50, 1.0, 1)]
    folder = write_site(tmp_path / "a", [], val)
    (joined,) = apache_join(source, {"a": folder}, RECIPE)
    assert (joined.site, joined.val_rows) == ("a", 5)
    np.testing.assert_array_equal(joined.y, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(joined.p, [0.2, 0.9, 0.1])
    np.testing.assert_array_equal(joined.complete, [True, False, False])
    (record,) = apache_records([joined])
    assert record == {
        "method": "apache-iva",
        "site": "a",
        "val_rows": 5,
        "scored": 3,
        "deaths": 1,
        "roc_auc": roc_auc([0, 1, 0], [0.2, 0.9, 0.1]),
        "auprc": auprc([0, 1, 0], [0.2, 0.9, 0.1]),
        "brier": brier([0, 1, 0], [0.2, 0.9, 0.1]),
        "ece": ece([0, 1, 0], [0.2, 0.9, 0.1]),
    }
    assert record["roc_auc"] == 1.0
    assert record["brier"] == pytest.approx((0.04 + 0.01 + 0.01) / 3)
    cases = complete_cases([joined])
    assert cases["complete"]["rows"] == 1 and cases["incomplete"]["rows"] == 2
    assert cases["incomplete"]["mean_predicted"] == pytest.approx(0.5)


def test_apache_join_refuses_two_iva_rows(tmp_path: Path) -> None:
    source = write_apache(tmp_path / "apache.csv.gz", [("1", "IVa", "0.2"), ("1", "IVa", "0.3")])
    folder = write_site(tmp_path / "a", [], [(1, 60, 1.0, 0)])
    with pytest.raises(ValueError, match="two APACHE IVa rows"):
        apache_join(source, {"a": folder}, RECIPE)


def test_headline_table_lists_apache_and_flags_drop() -> None:
    rows = [
        {**r, "auprc": 0.3, "brier": 0.1, "ece": 0.05}
        for r in make_records("drop", {"fedmap": {"a": (0.9, 0.8)}}) + MET
    ]
    apache = [{"roc_auc": 0.8, "auprc": 0.5, "brier": 0.07, "ece": 0.06}]
    lines = headline_table(rows, apache).splitlines()
    assert lines[0] == "| strategy | method | AUROC | AUPRC | Brier | ECE |"
    assert lines[2] == (
        "| drop † | fedmap | 0.8500 ± 0.0707 | 0.3000 ± 0.0000 | 0.1000 ± 0.0000 "
        "| 0.0500 ± 0.0000 |"
    )
    assert lines[-1] == "| APACHE IVa ‡ | hospital mortality | 0.8000 | 0.5000 | 0.0700 | 0.0600 |"


# ---- the command -----------------------------------------------------------------------------


def synthetic_rows(start: int, n: int) -> list[list[Any]]:
    """Stays start.. start+n-1: died every 4th row, lab missing (-1) every 3rd, age empty every
    5th; the risk rises with age and lab, so a model has something to learn."""
    rows = []
    for i in range(n):
        died = int(i % 4 == 0)
        age: Any = "" if i % 5 == 1 else 50 + 3 * (i % 7) + 10 * died
        lab: Any = -1 if i % 3 == 2 else round(1.0 + 0.5 * (i % 5) + 2 * died, 2)
        rows.append([start + i, age, lab, died])
    return rows


def federation_file(tmp_path: Path) -> tuple[Path, Path]:
    data = yaml.safe_load((ROOT / "federations" / "eicu.yaml").read_text())
    data["algorithm"].update(rounds=1, epochs=1)
    data["sites"] = {}
    predictions = []
    for k, name in enumerate(("north", "south", "east")):
        start = 1000 * (k + 1)
        train, val = synthetic_rows(start, 40), synthetic_rows(start + 500, 24)
        write_site(tmp_path / "sites" / name, train, val)
        data["sites"][name] = {"data": str(tmp_path / "sites" / name), "tier": 1}
        for stay, *_, died in val[:20]:
            predictions.append((str(stay), "IVa", str(0.1 + 0.6 * died)))
    federation = tmp_path / "eicu.yaml"
    federation.write_text(yaml.safe_dump(data, sort_keys=False))
    return federation, write_apache(tmp_path / "apache.csv.gz", predictions)


def write_config(tmp_path: Path, federation: Path, **extra: Any) -> Path:
    missing = {
        "federation": str(federation),
        "seeds": [7],
        "tuning_seeds": [100],
        "grid": [1.0],
        "variance": 1.0,
        "untuned_variance": 10.0,
        "jobs": 1,
        "engine": "loop",
        **extra,
    }
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"missing": missing}, sort_keys=False))
    return config


def test_main_end_to_end(tmp_path: Path) -> None:
    federation, apache = federation_file(tmp_path)
    config = write_config(tmp_path, federation)
    out = tmp_path / "results"
    assert main(["--config", str(config), "--out", str(out), "--apache", str(apache)]) == 0
    results = json.loads((out / "missing_results.json").read_text())
    methods = ("fedmap", "fedmap-untuned", "individual", "fedavg")
    assert sorted({(r["strategy"], r["method"], r["seed"]) for r in results["records"]}) == sorted(
        (s, m, 7) for s in ("drop", "median", "median+indicators", "federated") for m in methods
    )
    assert len(results["records"]) == 4 * 4 * 3  # strategies x methods x sites
    assert {(r["strategy"], r["method"], r["seed"]) for r in results["tuning"]} == {
        ("median", "fedmap@1", 100),
        ("median+indicators", "fedmap@1", 100),
    }
    assert {"roc_auc", "auprc", "brier", "ece"} <= set(results["records"][0])
    # each site: 24 val rows; the complete cases (no -1 lab, no empty age) are the rows drop scores
    complete = sum(1 for r in synthetic_rows(0, 24) if r[1] != "" and r[2] != -1)
    for row in results["rows_scored"]:
        assert row["val_rows"] == 24 and row["train_rows"] == 40
        assert row["drop"]["scored"] == complete
        assert row["median"]["scored"] == row["median+indicators"]["scored"] == 24
        assert row["federated"]["scored"] == 24
    assert [r["scored"] for r in results["apache"]] == [20, 20, 20]
    assert results["apache"][0]["roc_auc"] == 1.0
    assert set(results["reliability"]) == {"fedmap", "individual", "fedavg", "apache-iva"}
    assert sum(results["reliability"]["fedmap"]["counts"]) == 3 * 24

    metrics = json.loads((out / "missing_metrics.json").read_text())
    assert set(metrics) == {"mean", "apache_iva", "targets", "variance", "tuning", "seconds"}
    median_fedavg = [
        r["roc_auc"]
        for r in results["records"]
        if (r["strategy"], r["method"]) == ("median", "fedavg")
    ]
    assert metrics["mean"]["median"]["fedavg"]["roc_auc"] == pytest.approx(
        statistics.fmean(median_fedavg)
    )
    assert set(metrics["targets"]) == {
        f"{s}/{m}" for s in ("median", "median+indicators") for m in ("fedmap", "fedmap-untuned")
    }
    rows = results["records"]
    means = {k: statistics.fmean(v) for k, v in seed_means(rows, "roc_auc").items()}
    for key, verdict in metrics["targets"].items():
        strategy, method = key.split("/")
        bar = max(means[(strategy, "individual")], means[(strategy, "fedavg")])
        assert verdict["met"] == (
            means[(strategy, method)] >= bar and not verdict["below_individual"]
        )

    text = (out / "missing.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Rows scored"
    assert f"{3 * complete} of 72" in text and "**not comparable**" in text
    assert "optimistic" in text and "tuning seeds [100]" in text
    assert "Pollard" in text and "ODbL" in text
    assert "| APACHE IVa ‡ | hospital mortality |" in text
    assert (out / "missing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == [
        "missing.md",
        "missing.png",
        "missing_metrics.json",
        "missing_results.json",
    ]


def test_main_stops_when_the_grid_picks_another_variance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """params.yaml's sigma^2 must be the grid's best on the tuning seeds, or the stage stops."""
    federation, apache = federation_file(tmp_path)
    config = write_config(tmp_path, federation, grid=[1.0, 10.0], variance=10.0)
    monkeypatch.setattr(bench.missing, "choose", lambda _rows, _grid: (1.0, {}))
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match=r"missing\.variance is 10, but the grid's best"):
        main(["--config", str(config), "--out", str(out), "--apache", str(apache)])
    assert not out.exists()


def test_the_budget_section_reports_both_budgets_and_fedavgs_change() -> None:
    from bench.missing import budget_section

    budget = [
        {"rounds": 20, "method": "fedmap", "roc_auc": 0.78, "ece": 0.17, "mean_predicted": 0.26},
        {"rounds": 20, "method": "fedavg", "roc_auc": 0.80, "ece": 0.06, "mean_predicted": 0.10},
        {"rounds": 60, "method": "fedmap", "roc_auc": 0.81, "ece": 0.07, "mean_predicted": 0.14},
        {"rounds": 60, "method": "fedavg", "roc_auc": 0.79, "ece": 0.06, "mean_predicted": 0.09},
    ]
    scored = [{"val_rows": 100, "val_deaths": 9}, {"val_rows": 100, "val_deaths": 11}]
    text = budget_section(budget, scored, 2)
    assert "why the file runs 60 rounds" in text
    assert "the validation prevalence\nis 0.100" in text or "prevalence is 0.100" in text.replace(
        "\n", " "
    )
    assert "FedAvg does not gain from the longer one (-0.0100 AUROC)" in text.replace("\n", " ")
    assert "| 20 | fedmap | 0.7800 | 0.1700 | 0.260 |" in text
    assert budget_section(budget[:2], scored, 2) == ""  # one budget: nothing to compare
