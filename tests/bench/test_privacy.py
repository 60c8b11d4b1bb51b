"""``bench/privacy.py``: its tables on hand-made records (no training), then one tiny end-to-end
run of its command line on the real heart-disease sites (one seed, one round, two epsilons)."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# bench/ is a folder of scripts run as ``python -m bench.privacy`` from the repository root, not
# an installed package: make it importable when pytest runs from its console script.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.privacy import Config, configs, main  # noqa: E402
from bench.privacy_report import (  # noqa: E402
    CLEAR,
    cost_finding,
    cost_table,
    dataset_finding,
    differences,
    gain_table,
    metrics_of,
    utility_table,
)
from fedmap.schema import read_federation  # noqa: E402
from site_tasks.local.sources import heart_disease_sites  # noqa: E402


def record(key: str, seed: int, scores: dict[str, float], **extra: Any) -> dict[str, Any]:
    """A run's record as ``run_job`` writes it, with accuracy and one more metric per site."""
    method = "individual" if key == "local" else "fedmap"
    parts = ["inf", "none"] if key == "local" else key.removeprefix("eps=").split("/")
    eps, secure = parts[0], parts[1]
    return {
        "federation": "heart_disease",
        "config": key,
        "method": method,
        "epsilon": eps,
        "secure_aggregation": secure,
        "widened": not key.endswith("/unwidened"),
        "seed": seed,
        "rounds": 15,
        "metric": "accuracy",
        "noise_multiplier": extra.get("z", 0.0),
        "epsilon_spent": extra.get("spent"),
        "weights": "equal" if eps != "inf" else "omega",
        "tau2": extra.get("tau2", 0.0),
        "seconds_per_round": extra.get("seconds", 0.5),
        "bytes_per_site_round": extra.get("sent", 64.0),
        "peak_mb": 300.0 + seed,
        "baseline_mb": 200.0,
        "sites": {s: {"accuracy": v, "roc_auc": v / 2} for s, v in scores.items()},
    }


ROWS = [
    record("eps=8/none", 0, {"a": 0.70, "b": 0.80}, z=2.5, spent=7.99, tau2=1.5),
    record("eps=8/none", 1, {"a": 0.72, "b": 0.80}, z=2.5, spent=7.99, tau2=1.7),
    record("eps=8/ckks", 0, {"a": 0.70, "b": 0.80}, z=2.5, spent=7.99, sent=331_000.0),
    record("eps=8/ckks", 1, {"a": 0.72, "b": 0.80000002}, z=2.5, spent=7.99, sent=331_000.0),
    record("eps=inf/none", 0, {"a": 0.80, "b": 0.90}),
    record("eps=inf/none", 1, {"a": 0.80, "b": 0.90}),
    record("eps=inf/ckks", 0, {"a": 0.80, "b": 0.88}, sent=331_000.0),
    record("eps=inf/ckks", 1, {"a": 0.80, "b": 0.90}, sent=331_000.0),
    record(f"eps=inf/{CLEAR}", 0, {"a": 0.80, "b": 0.88}),
    record(f"eps=inf/{CLEAR}", 1, {"a": 0.80, "b": 0.90}),
    record("eps=8/none/unwidened", 0, {"a": 0.60, "b": 0.70}, z=2.5, spent=7.99, tau2=1.5),
    record("eps=8/none/unwidened", 1, {"a": 0.62, "b": 0.70}, z=2.5, spent=7.99, tau2=1.7),
    record("local", 0, {"a": 0.75, "b": 0.78}, sent=0.0),
    record("local", 1, {"a": 0.75, "b": 0.80}, sent=0.0),
]


def test_configs() -> None:
    keys = [c.key for c in configs("x", [8.0, math.inf], ["none", "ckks"])]
    assert keys == [
        *("eps=8/none", "eps=8/ckks", "eps=8/none/unwidened"),
        *("eps=inf/none", "eps=inf/ckks", "eps=inf/clear", "local"),
    ]
    # the clear release only beside CKKS, to tell its rounding from the release's own effect;
    # the ablation only under DP, and only when asked for
    assert [c.key for c in configs("x", [math.inf], ["none"])] == ["eps=inf/none", "local"]
    no_ablation = configs("x", [8.0], ["none"], ablate=False)
    assert [c.key for c in no_ablation] == ["eps=8/none", "local"]
    assert Config("x", "individual").key == "local"


def test_utility_table() -> None:
    lines = utility_table(ROWS, "heart_disease").splitlines()
    assert lines[0].startswith("| epsilon | secure aggregation | mean accuracy over sites |")
    # eps=8: site means 0.75 and 0.76 against local 0.765 and 0.775 -> 0.755 - 0.77 = -0.015
    assert lines[2] == "| 8 | off | **0.7550 ± 0.0071** | -0.0150 | equal | 2.500 | 7.990 | 1.6 |"
    release = "| inf (no DP) | off, release path | **0.8450 ± 0.0071** | +0.0750 | omega |"
    assert lines[6].startswith(release)
    assert lines[7].startswith("| 8 | off, prior not widened | **0.6550 ± 0.0071** | -0.1150 |")
    assert lines[-1] == "| - | local only | **0.7700 ± 0.0071** | - | - | - | - | - |"
    assert len(lines) == 2 + 7


def test_gain_table_marks_sites_below_local() -> None:
    lines = gain_table(ROWS, "heart_disease").splitlines()
    assert lines[0] == "| epsilon | secure aggregation | a | b | sites below local |"
    # a: 0.71 vs local 0.75 (-4.00, below); b: 0.80 vs 0.79 (+1.00)
    assert lines[2] == "| 8 | off | **0.7100 (-4.00)** | 0.8000 (+1.00) | 1 |"
    assert lines[4] == "| inf (no DP) | off | 0.8000 (+5.00) | 0.9000 (+11.00) | 0 |"
    assert lines[-1] == "| - | local only | 0.7500 | 0.7900 | - |"


def test_differences() -> None:
    diff = differences(ROWS, "heart_disease")
    assert diff["8"] == {"rounding": pytest.approx(2e-8, abs=1e-12)}
    assert diff["inf"]["rounding"] == 0.0
    assert diff["inf"]["vs_plain"] == pytest.approx(0.02)  # b's accuracy at seed 0


def test_cost_table_and_metrics() -> None:
    lines = cost_table(ROWS, "heart_disease").splitlines()
    assert lines[3] == "| 8 | CKKS | 0.500 ± 0.000 | 331,000 | 301 | 200 |"
    assert lines[-1] == "| - | local only | 0.500 ± 0.000 | 0 | 301 | 200 |"
    metrics = metrics_of(ROWS, 12.34)
    assert metrics["seconds"] == 12.3
    assert metrics["heart_disease"]["mean"]["local"] == pytest.approx(0.77)
    assert set(metrics["heart_disease"]["ckks_difference"]) == {"8", "inf"}


def test_findings() -> None:
    heart = read_federation(ROOT / "federations" / "heart_disease.yaml")
    line = dataset_finding(ROWS, heart)
    assert line.startswith("- **Fed-Heart-Disease**, local only 0.7700. ")
    assert "epsilon 8 (z 2.50, tau 1.3): 0.7550 (-1.5 pp, 1 of 4 sites below local)" in line
    assert "no DP: 0.8500 (+8.0 pp, 0 of 4 sites below local)" in line
    assert "below the local model's at every epsilon tested" in line
    assert "the widening adds +10.0 to +10.0 pp at the same noise" in line
    assert "At the tightest budget, epsilon 8, it is not within 1 pp of the local model" in line
    cost = cost_finding(ROWS)
    assert "the largest difference secure aggregation makes to any score is 2e-08" in cost
    assert "each upload is 331 kB" in cost and "instead of 64 bytes" in cost


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--datasets", "--epsilons", "--secure", "--seeds", "--rounds", "--jobs"):
        assert option in text


def test_main_end_to_end(tmp_path: Path) -> None:
    """One seed, one round, epsilon 8 and inf, on the real heart-disease sites: each run in its
    own process."""
    data = yaml.safe_load((ROOT / "federations" / "heart_disease.yaml").read_text())
    for folder in heart_disease_sites(ROOT / "datasets" / "fed_heart_disease", tmp_path / "d"):
        data["sites"][folder.name]["data"] = str(folder)
    (tmp_path / "heart_disease.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "results"
    argv = ["--federations", str(tmp_path), "--datasets", "heart_disease", "--seeds", "3"]
    assert main([*argv, "--epsilons", "8,inf", "--rounds", "1", "--out", str(out)]) == 0
    rows = json.loads((out / "privacy_results.json").read_text())
    keys = [
        *("eps=8/none", "eps=8/ckks", "eps=8/none/unwidened"),
        *("eps=inf/none", "eps=inf/ckks", "eps=inf/clear", "local"),
    ]
    assert [r["config"] for r in rows] == keys
    runs = {r["config"]: r for r in rows}
    for r in rows:
        assert r["rounds"] == 1 and r["seed"] == 3
        assert set(r["sites"]) == {"cleveland", "hungarian", "switzerland", "va"}
        assert all(0.0 <= s["accuracy"] <= 1.0 for s in r["sites"].values())
        assert r["peak_mb"] >= r["baseline_mb"] > 50
        assert r["seconds_per_round"] > 0
    dp = runs["eps=8/none"]
    assert dp["noise_multiplier"] > 0 and dp["tau2"] > 0 and dp["weights"] == "equal"
    assert 7.0 < dp["epsilon_spent"] <= 8.0 + 1e-6
    ablation = runs["eps=8/none/unwidened"]
    assert not ablation["widened"] and ablation["tau2"] == pytest.approx(dp["tau2"])
    assert runs["eps=inf/none"]["noise_multiplier"] == 0.0
    assert runs["eps=inf/none"]["epsilon_spent"] is None
    # what each site uploads per round: 14 float32 values and a scalar, or one CKKS ciphertext
    assert runs["eps=inf/none"]["bytes_per_site_round"] == 14 * 4 + 8
    assert runs["eps=8/none"]["bytes_per_site_round"] == 14 * 4 + 8
    assert runs["eps=8/ckks"]["bytes_per_site_round"] > 100_000
    assert runs["local"]["bytes_per_site_round"] == 0
    # CKKS equals the same release summed in the clear, up to its rounding
    for eps, clear in (("8", "none"), ("inf", CLEAR)):
        on, off = runs[f"eps={eps}/ckks"]["sites"], runs[f"eps={eps}/{clear}"]["sites"]
        for site, scores in on.items():
            for metric, value in scores.items():
                assert value == pytest.approx(off[site][metric], abs=1e-4)
    metrics = json.loads((out / "privacy_metrics.json").read_text())
    means = metrics["heart_disease"]["mean"]
    assert set(means) == set(keys)
    local = statistics.fmean(s["accuracy"] for s in runs["local"]["sites"].values())
    assert means["local"] == pytest.approx(local)
    assert metrics["heart_disease"]["ckks_difference"]["8"]["rounding"] <= 1e-4
    text = (out / "privacy.md").read_text()
    assert text.startswith("# What privacy costs FedMAP")
    assert "## Fed-Heart-Disease" in text and "Epsilons 8,inf, seeds [3]" in text
    assert (out / "privacy.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == [
        "privacy.md",
        "privacy.png",
        "privacy_metrics.json",
        "privacy_results.json",
    ]
