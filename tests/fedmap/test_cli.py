"""The ``fedmap`` command line, end to end: simulate, generate, simulate from disk, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedmap.cli import main
from fedmap.data import read_site
from fedmap.synthetic import generate

METHODS = ["fedmap", "individual", "fedavg"]
SITES = [f"site-{k:02d}" for k in range(1, 11)]
BINARY = ("accuracy", "balanced_accuracy", "roc_auc", "auprc", "brier", "ece")
KEYS = {"scenario", "method", "seed", "site", "n_scored", *BINARY}


def _simulate(out: Path, *extra: str) -> int:
    return main(
        [
            "simulate",
            "--scenario",
            "label-skew",
            "--methods",
            ",".join(METHODS),
            "--seeds",
            "0",
            "--rounds",
            "1",
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("simulate")
    assert _simulate(out) == 0
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rc = main(["generate", "--scenarios", "label-skew", "--seeds", "0", "--out", str(root)])
    assert rc == 0
    return root


def _records(out: Path) -> list[dict[str, object]]:
    records = json.loads((out / "results.json").read_text())
    assert isinstance(records, list)
    return records


def test_simulate_writes_results_json(simulated: Path) -> None:
    records = _records(simulated)
    assert len(records) == 30
    assert all(set(r) == KEYS for r in records)
    assert {(r["method"], r["site"]) for r in records} == {(m, s) for m in METHODS for s in SITES}
    assert {r["scenario"] for r in records} == {"label-skew"}
    assert {r["seed"] for r in records} == {0}
    for r in records:
        for metric in BINARY:
            assert 0.0 <= float(r[metric]) <= 1.0  # type: ignore[arg-type]
        assert float(r["brier"]) > 0.0 and float(r["auprc"]) > 0.0  # type: ignore[arg-type]


def test_simulate_writes_summary_table(simulated: Path) -> None:
    summary = (simulated / "summary.md").read_text()
    assert summary.startswith("# label-skew\n")
    assert "| site | fedmap | individual | fedavg |" in summary
    assert "| site-01 |" in summary and "| site-10 |" in summary
    assert "**average**" in summary
    assert "## time per round" in summary
    # the average row of the accuracy table is the site-average of results.json
    records = _records(simulated)
    accuracy_table = summary.split("### accuracy")[1].split("###")[0]
    average_row = next(line for line in accuracy_table.splitlines() if "**average**" in line)
    for method in METHODS:
        mean = np.mean([r["accuracy"] for r in records if r["method"] == method])
        assert f"**{100 * mean:.2f} ± 0.00**" in average_row


def test_simulate_writes_png(simulated: Path) -> None:
    png = (simulated / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    assert sorted(p.name for p in simulated.iterdir()) == [
        "curves.png",
        "reliability.png",
        "results.json",
        "summary.md",
    ]  # no temporary files left behind
    reliability = (simulated / "reliability.png").read_bytes()
    assert reliability[:8] == b"\x89PNG\r\n\x1a\n" and len(reliability) > 10_000


def test_simulate_writes_the_clinical_metrics_table(simulated: Path) -> None:
    summary = (simulated / "summary.md").read_text()
    assert "### Brier score (lower is better)" in summary and "### AUPRC" in summary
    table = summary.split("## clinical metrics")[1]
    assert "| method | ROC-AUC | AUPRC | Brier score | ECE |" in table
    assert "| site | method |" not in table  # ten sites: too many for the per-site table
    records = _records(simulated)
    for method in METHODS:
        means = [
            np.mean([float(r[m]) for r in records if r["method"] == method])  # type: ignore[arg-type]
            for m in ("roc_auc", "auprc", "brier", "ece")
        ]
        cells = " | ".join(f"{v:.3f} ± 0.000" for v in means)
        assert f"| {method} | {cells} |" in table


def test_generate_writes_site_folders(generated: Path) -> None:
    federation = generated / "seed-0" / "label-skew"
    assert sorted(p.name for p in (generated / "seed-0").iterdir()) == ["label-skew"]
    assert sorted(p.name for p in federation.iterdir()) == SITES
    site = federation / "site-01"
    assert sorted(p.name for p in site.iterdir()) == ["train.csv", "val.csv"]
    lines = (site / "train.csv").read_text().splitlines()
    assert len(lines) == 1 + 1400
    assert lines[0].endswith(",x29,label") and lines[0].startswith("x00,x01,")
    assert len((site / "val.csv").read_text().splitlines()) == 1 + 600
    expected = generate("label-skew", 0)[6]
    back = read_site(federation / "site-07")
    np.testing.assert_allclose(back.x_val, expected.x_val, rtol=1e-8, atol=0)
    assert np.array_equal(back.y_train, expected.y_train)


def test_simulate_from_data_root_equals_in_memory(
    simulated: Path, generated: Path, tmp_path: Path
) -> None:
    assert _simulate(tmp_path, "--data-root", str(generated)) == 0
    from_disk, in_memory = _records(tmp_path), _records(simulated)
    assert [r["accuracy"] for r in from_disk] == [r["accuracy"] for r in in_memory]
    # the CSV holds features to 1e-8 relative (test_generate_writes_site_folders): the threshold
    # metrics and ROC-AUC are identical; the probabilities (Brier, ECE) move by float rounding,
    # and so does AUPRC, which a tie between two positives' float32 probabilities changes
    close = ("auprc", "brier", "ece")
    assert [{k: v for k, v in r.items() if k not in close} for r in from_disk] == [
        {k: v for k, v in r.items() if k not in close} for r in in_memory
    ]
    for disk, memory in zip(from_disk, in_memory, strict=True):
        for metric in close:
            assert disk[metric] == pytest.approx(memory[metric], abs=1e-5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "fedmap,fedmapp"], "unknown method(s) fedmapp"),
        (["--methods", ","], "(none given)"),
        (["--seeds", "0,x"], "seeds must be integers"),
        (["--scenario", "label-skew-2"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = {"--scenario": "label-skew", "--out": str(tmp_path)}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *[x for kv in base.items() for x in kv]])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_invalid_config_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("simulation:\n  training:\n    foo: 1\n")
    assert _simulate(tmp_path / "out", "--config", str(config)) == 2
    assert "simulation.training.foo" in capsys.readouterr().err
    assert _simulate(tmp_path / "out", "--config", str(tmp_path / "missing.yaml")) == 2
    assert (
        main(["simulate", "--scenario", "label-skew", "--rounds", "0", "--out", str(tmp_path)]) == 2
    )
    assert "rounds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _exit_code(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_empty_seed_list_is_a_usage_error(tmp_path: Path) -> None:
    argv = ["simulate", "--scenario", "label-skew", "--methods", "individual", "--seeds", ","]
    assert _exit_code([*argv, "--rounds", "1", "--out", str(tmp_path)]) == 2


def test_missing_data_root_is_an_error(tmp_path: Path) -> None:
    argv = ["simulate", "--scenario", "label-skew", "--methods", "individual", "--seeds", "0"]
    argv += ["--rounds", "1", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path)]
    assert _exit_code(argv) == 2


def _tiny_federation(root: Path) -> Path:
    """Two binary sites of 48 training and 40 validation rows, label = 1 when 2 f1 + f2 > c."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(("north", "south")):
        for file, n in (("train.csv", 48), ("val.csv", 40)):
            x = rng.standard_normal((n, 2)) * [1.0 + k, 1.0]
            y = (2 * x[:, 0] + x[:, 1] + 0.5 * rng.standard_normal(n) > k).astype(float)
            rows = [f"{a:.6g},{b:.6g},{c:.0f}" for a, b, c in zip(x[:, 0], x[:, 1], y, strict=True)]
            path = root / "sites" / name / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("f1,f2,label\n" + "\n".join(rows) + "\n")
    config = {
        "name": "tiny",
        "task": {"contract": "tiny", "model": "logreg", "n_features": 2, "target": "label"},
        "algorithm": {"rounds": 2, "epochs": 2, "batch_size": 16, "lr": 0.1, "seed": 3},
        "sites": {"north": {"data": "sites/north"}, "south": {"data": "sites/south"}},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _federation(root: Path, out: Path, *extra: str) -> int:
    argv = ["simulate", "--federation", str(_tiny_federation(root)), "--methods"]
    return main([*argv, "individual,fedavg", "--seeds", "0,1", "--out", str(out), *extra])


def test_federation_equity_in_a_lower_is_better_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _federation(tmp_path, out, "--equity-metric", "brier") == 0
    assert f"{out / 'curves.png'} and {out / 'reliability.png'}" in capsys.readouterr().err
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((out / "results.json").read_text())
    assert all(set(BINARY) <= set(r) for r in rows)
    brier = {
        (m, s): np.mean([r["brier"] for r in rows if (r["method"], r["site"]) == (m, s)])
        for m in ("individual", "fedavg")
        for s in ("north", "south")
    }
    worst = max(("north", "south"), key=lambda s: brier[("individual", s)])
    summary = (out / "summary.md").read_text()
    equity = summary.split("## equity")[1]
    assert "Gain of each site over its local model, Brier score (lower is better" in equity
    assert f"Worst-served site (highest local Brier score): **{worst}**." in equity
    # a gain is the decrease of the Brier score from Individual to FedAvg
    gains = [brier[("individual", s)] - brier[("fedavg", s)] for s in ("north", "south")]
    assert "| fedavg | " + " | ".join(f"{g:+.3f}" for g in gains) + " |" in equity
    # two sites: the clinical table has its per-site rows, each a mean over the two seeds
    clinical = summary.split("## clinical metrics")[1].split("## equity")[0]
    assert "| north | fedavg | " in clinical
    assert f"{brier[('fedavg', 'north')]:.3f} ± " in clinical


def test_federation_equity_defaults_to_the_primary_metric(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _federation(tmp_path, out) == 0
    assert "Worst-served site (lowest local accuracy)" in (out / "summary.md").read_text()


def test_an_unknown_equity_metric_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _federation(tmp_path, out, "--equity-metric", "c_index") == 2
    err = capsys.readouterr().err
    assert "--equity-metric 'c_index' is not a metric of a binary task" in err
    assert "accuracy, balanced_accuracy, roc_auc, auprc, brier, ece" in err
    assert not out.exists()  # refused before any run
    assert _simulate(out, "--equity-metric", "brier") == 2
    assert "--equity-metric goes with --federation" in capsys.readouterr().err
    assert not out.exists()


def test_epochs_sets_the_local_epochs_of_a_synthetic_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--scenario", "label-skew", "--methods", "individual", "--seeds", "0"]
    argv += ["--rounds", "1", "--sites", "2"]
    runs = {}
    for label, extra in (("default", []), ("one", ["--epochs", "1"]), ("three", ["--epochs", "3"])):
        assert main([*argv, *extra, "--out", str(tmp_path / label)]) == 0
        runs[label] = _records(tmp_path / label)
    assert runs["one"] == runs["default"]  # the embedded config trains one epoch per round
    assert runs["three"] != runs["one"]
    assert _federation(tmp_path, tmp_path / "fed", "--epochs", "2") == 2
    assert "--epochs goes with --scenario" in capsys.readouterr().err
