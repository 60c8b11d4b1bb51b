"""``bench/demo_runs.py``: one tiny replay of the demo's federation, end to end, and its page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.demo_runs import main, verdict  # noqa: E402
from site_tasks.local.demo_data import TIERS  # noqa: E402


def test_a_run_meets_the_targets_by_its_mean_and_its_worst_site() -> None:
    met = verdict({"a": 4.0, "b": -0.5, "c": 6.0})
    assert met["mean_met"] and met["worst_met"] and met["worst_site"] == "b"
    missed = verdict({"a": 9.0, "b": -1.5})
    assert missed["mean_met"] and not missed["worst_met"] and missed["worst_gain_pp"] == -1.5


def test_one_pair_of_two_round_runs_writes_the_page_json_and_picture(tmp_path: Path) -> None:
    assert main(["--pairs", "1", "--rounds", "2", "--out", str(tmp_path)]) == 0
    schedules = json.loads((tmp_path / "demo_runs.json").read_text())["schedules"]
    assert (schedules["demo"]["lr_final"], schedules["constant"]["lr_final"]) == (0.001, None)
    trained = {name for name, tier in TIERS.items() if tier in (1, 2)}
    for result in schedules.values():
        assert set(result["local_only_accuracy"]) == trained
        assert [(r["pair"], r["run"]) for r in result["records"]] == [(1, "cold"), (1, "warm")]
        for record in result["records"]:
            assert set(record["gains_pp"]) == trained
            assert record["worst_gain_pp"] == min(record["gains_pp"].values())
    # the schedule reaches the local baseline too: its models differ between the two
    assert schedules["demo"]["local_only_accuracy"] != schedules["constant"]["local_only_accuracy"]
    page = (tmp_path / "demo_runs.md").read_text()
    assert "| tiers 1-2 mean gain ≥ +3 pp |" in page and "| site-12 |" in page
    assert "lr 0.01 → 0.001: cold" in page and "lr 0.01 constant: cold" in page
    metrics = json.loads((tmp_path / "demo_runs_metrics.json").read_text())
    assert (
        0 <= metrics["demo_cold_worst_met_share"] <= 1 and "constant_warm_mean_gain_pp" in metrics
    )
    assert (tmp_path / "demo_runs.png").read_bytes()[:4] == b"\x89PNG"
