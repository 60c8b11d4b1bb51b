"""The ``fedmap`` command line, end to end: simulate, generate, simulate from disk, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmap.cli import main
from fedmap.data import read_site
from fedmap.synthetic import generate

METHODS = ["fedmap", "individual", "fedavg"]
SITES = [f"site-{k:02d}" for k in range(1, 11)]
KEYS = {"scenario", "method", "seed", "site", "accuracy", "balanced_accuracy", "roc_auc"}


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
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            assert 0.0 <= float(r[metric]) <= 1.0  # type: ignore[arg-type]


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
        "results.json",
        "summary.md",
    ]  # no temporary files left behind


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
    assert from_disk == in_memory


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
