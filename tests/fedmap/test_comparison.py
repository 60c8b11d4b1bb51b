"""The comparison runner on a tiny two-site federation of CSV folders: one record per run and site,
with the task's metrics; method variants and their options."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedmap.cli import main
from fedmap.comparison import (
    RECORD_KEYS,
    ComparisonRun,
    Variant,
    compare,
    default_variants,
    execute,
    load_sites,
    options_for,
    records,
    variants_of,
)
from fedmap.config import ConfigError
from fedmap.schema import Federation, read_federation
from site_tasks.local.sources import heart_disease_sites

ROOT = Path(__file__).resolve().parents[2]

BINARY_METRICS = {"accuracy", "balanced_accuracy", "roc_auc", "auprc", "brier", "ece"}


def write_csv(path: Path, header: list[str], rows: np.ndarray[Any, Any]) -> None:
    lines = [",".join(header)] + [",".join(f"{v:.6g}" for v in row) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def binary_site(folder: Path, seed: int) -> None:
    """label = 1 when 2 f1 + f2 > 0: linearly separable, f1 on a site-specific scale."""
    rng = np.random.default_rng(seed)
    for file, n in (("train.csv", 64), ("val.csv", 40)):
        x = rng.standard_normal((n, 2)) * [1.0 + seed, 1.0] + [seed, 0.0]
        y = (2 * x[:, 0] + x[:, 1] > 2 * seed).astype(float)
        write_csv(folder / file, ["f1", "f2", "label"], np.column_stack([x, y]))


def survival_site(folder: Path, seed: int) -> None:
    """The hazard grows with f1: time = exp(-2 f1) * Exp(1), a fifth censored."""
    rng = np.random.default_rng(seed)
    for file, n in (("train.csv", 64), ("val.csv", 40)):
        x = rng.standard_normal((n, 2))
        time = np.exp(-2 * x[:, 0]) * rng.exponential(size=n) * 100
        event = (rng.random(n) > 0.2).astype(float)
        write_csv(folder / file, ["f1", "f2", "E", "T"], np.column_stack([x, event, time]))


def federation(tmp_path: Path, task: dict[str, Any], make: Any) -> Federation:
    for k, name in enumerate(("north", "south")):
        make(tmp_path / "sites" / name, k)
    config = {
        "name": "tiny",
        "task": {"contract": "tiny", "model": "logreg", "n_features": 2, **task},
        "algorithm": {"rounds": 2, "epochs": 3, "batch_size": 16, "lr": 0.1, "seed": 7},
        "sites": {
            "north": {"data": "sites/north", "tier": 1},
            "south": {"data": "sites/south"},
            "late": {"data": "sites/not-there", "tier": 3},  # tier 3: never read here
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return read_federation(path)


@pytest.fixture
def binary(tmp_path: Path) -> Federation:
    return federation(tmp_path, {"target": "label"}, binary_site)


@pytest.fixture
def survival(tmp_path: Path) -> Federation:
    return federation(tmp_path, {"type": "survival", "target": "E", "time": "T"}, survival_site)


RUNS = [ComparisonRun(v, "logreg", 1) for v in default_variants(["individual", "fedavg"])]


def test_binary_records(binary: Federation) -> None:
    seen: list[ComparisonRun] = []
    results = compare(binary, RUNS, progress=seen.append)
    assert seen == RUNS
    assert [r.variant.name for r, _ in results] == ["individual", "fedavg"]
    for _, result in results:
        assert result.sites == ("north", "south") and len(result.history) == 2
    rows = records(binary, results)
    assert [(r["method"], r["site"]) for r in rows] == [
        ("individual", "north"),
        ("individual", "south"),
        ("fedavg", "north"),
        ("fedavg", "south"),
    ]
    for row in rows:
        assert set(row) == {*RECORD_KEYS, *BINARY_METRICS}
        assert (row["federation"], row["model"], row["seed"]) == ("tiny", "logreg", 1)
        assert 0.0 <= row["accuracy"] <= 1.0
    by = {(r["method"], r["site"]): r for r in rows}
    # a linear rule per site, learnt from 64 rows: near-perfect on the site's own val.csv
    assert by[("individual", "north")]["accuracy"] >= 0.9
    assert by[("individual", "south")]["accuracy"] >= 0.85
    assert by[("individual", "north")]["roc_auc"] >= 0.95


def test_survival_records_carry_c_index_and_no_accuracy(survival: Federation) -> None:
    rows = records(survival, compare(survival, RUNS))
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {*RECORD_KEYS, "c_index"}
        assert "accuracy" not in row
        assert 0.0 <= row["c_index"] <= 1.0
    # risk grows with f1 and the model sees f1: well above chance for a site trained alone
    assert min(r["c_index"] for r in rows if r["method"] == "individual") > 0.65


def test_a_run_repeats_exactly(binary: Federation) -> None:
    first, second = (execute(binary, RUNS[1]) for _ in range(2))
    assert first.method == "fedavg" and first.seed == 1
    assert first.final == second.final and first.history == second.history


def test_load_sites_reads_tier_one_only(binary: Federation) -> None:
    sites = load_sites(binary)
    assert [s.name for s in sites] == ["north", "south"]
    assert all(s.num_features == 2 and s.num_train == 64 for s in sites)
    only_late = Federation(binary.path, binary.name, binary.task, binary.algorithm, binary.tier(3))
    with pytest.raises(ConfigError, match="no tier-1 site to simulate"):
        load_sites(only_late)


def test_variants_of() -> None:
    variants = variants_of(
        {
            "fedmap-icnn": {"method": "fedmap", "prior": "icnn"},
            "fedprox": {"mu": 0.01},
            "fedavg": None,
        }
    )
    assert variants == (
        Variant("fedmap-icnn", "fedmap", {"prior": "icnn"}),
        Variant("fedprox", "fedprox", {"mu": 0.01}),
        Variant("fedavg", "fedavg", {}),
    )
    with pytest.raises(ConfigError, match=r"methods\.mine\.method: unknown 'fedmapp'"):
        variants_of({"mine": {"method": "fedmapp"}})
    with pytest.raises(ConfigError, match=r"methods\.fedsgd\.method: unknown 'fedsgd'"):
        variants_of({"fedsgd": {}})


def test_default_variants() -> None:
    assert default_variants(["fedmap", "fedmap-diagonal", "ditto"]) == (
        Variant("fedmap", "fedmap"),
        Variant("fedmap-diagonal", "fedmap", {"prior": "diagonal"}),
        Variant("ditto", "ditto"),
    )


def test_options_for(binary: Federation) -> None:
    fedmap = options_for(binary, Variant("fedmap-icnn", "fedmap", {"prior": "icnn"}))
    assert fedmap == {
        "prior": "icnn",
        "variance": 1.0,
        "input_variance": math.inf,
        "weighting": "omega",
        "min_variance": 1.0,
    }
    assert options_for(binary, Variant("fedprox", "fedprox", {"mu": 0.1})) == {"mu": 0.1}
    assert options_for(binary, Variant("fedavg", "fedavg")) == {}


# --- fedmap simulate --federation ----------------------------------------------------------------


@pytest.fixture
def heart_file(tmp_path: Path) -> Path:
    """federations/heart_disease.yaml with its sites written from datasets/ into tmp_path."""
    data = yaml.safe_load((ROOT / "federations" / "heart_disease.yaml").read_text())
    for folder in heart_disease_sites(ROOT / "datasets" / "fed_heart_disease", tmp_path / "data"):
        data["sites"][folder.name]["data"] = str(folder)
    path = tmp_path / "heart_disease.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_cli_simulate_federation(heart_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["simulate", "--federation", str(heart_file), "--methods", "individual,fedavg"]
    assert main([*argv, "--seeds", "1", "--rounds", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    sites = ["cleveland", "hungarian", "switzerland", "va"]
    assert [(r["method"], r["site"]) for r in rows] == [
        (m, s) for m in ("individual", "fedavg") for s in sites
    ]
    for row in rows:
        assert set(row) == {*RECORD_KEYS, *BINARY_METRICS}
        assert (row["federation"], row["model"], row["seed"]) == ("heart_disease", "logreg", 1)
        # accuracy on a site's own test split: a multiple of 1 / (its FLamby test size)
        n = {"cleveland": 104, "hungarian": 89, "switzerland": 16, "va": 45}[row["site"]]
        assert row["accuracy"] * n == pytest.approx(round(row["accuracy"] * n))
        assert 0.0 <= row["accuracy"] <= 1.0
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# heart_disease\n")
    assert "## equity" in summary and "Worst-served site" in summary
    assert "| fedavg |" in summary
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## clinical metrics" in summary


def test_cli_federation_defaults_to_the_files_seed_and_fedmap(
    heart_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert (
        main(["simulate", "--federation", str(heart_file), "--rounds", "1", "--out", str(out)]) == 0
    )
    rows = json.loads((out / "results.json").read_text())
    assert {r["seed"] for r in rows} == {42}  # algorithm.seed
    assert sorted({r["method"] for r in rows}) == ["fedmap", "individual"]


def test_cli_help_mentions_federation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    assert "--federation" in capsys.readouterr().out


def test_cli_bad_federation_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    absent = tmp_path / "absent.yaml"
    assert main(["simulate", "--federation", str(absent), "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"fedmap: error: {absent}: cannot read the federation file" in err
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\ntask: {contract: c, typo: 1}\nsites: {a: {data: a}}\n")
    assert main(["simulate", "--federation", str(typo), "--out", out]) == 2
    err = capsys.readouterr().err
    assert str(typo) in err and "task.typo" in err
    assert not (tmp_path / "out").exists()


def test_cli_scenario_and_federation_are_exclusive(
    heart_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            ["simulate", "--scenario", "label-skew", "--federation", str(heart_file), "--out", "o"]
        )
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    # a prior variant is for federation files only
    out = str(tmp_path / "o")
    argv = ["simulate", "--scenario", "label-skew", "--methods", "fedmap-icnn", "--out", out]
    assert main(argv) == 2
    assert "unknown method(s) fedmap-icnn" in capsys.readouterr().err


def test_cli_bad_site_data_names_file_row_and_column(
    heart_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site file that breaks the recipe stops the run with exit 2, and no cell is printed."""
    train = tmp_path / "data" / "va" / "train.csv"
    lines = train.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = "987654.321"  # cp, outside its levels 1-4
    lines[5] = ",".join(cells)
    train.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    assert main(["simulate", "--federation", str(heart_file), "--rounds", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"fedmap: error: {train}: row 6, column 'cp': not one of the levels 1, 2, 3, 4" in err
    assert "987654" not in err
    train.unlink()
    assert main(["simulate", "--federation", str(heart_file), "--rounds", "1", "--out", out]) == 2
    assert str(train) in capsys.readouterr().err
