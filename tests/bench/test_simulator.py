"""``bench/simulator.py``: the FLOP count, the page's verdicts on hand-made figures, and one tiny
end-to-end run of its command line (two small sizes, no Flower)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.simulator import layer_macs, macs_per_row, main, round_flops, sites_of  # noqa: E402
from bench.simulator_report import metrics_of, page  # noqa: E402
from fedmap.models import build_model  # noqa: E402


def test_flops_count_the_mlps_multiply_adds_per_row() -> None:
    model = build_model("mlp", 30)
    assert layer_macs(model) == [30 * 32, 32 * 16, 16]
    m = macs_per_row(model)
    assert m == 30 * 32 + 32 * 16 + 16
    sites = sites_of(2, 0)
    training = 6 * m - 2 * 30 * 32  # no input gradient for the first layer
    expected = sum(1400 * (training + 2 * m) + 600 * 2 * m for _ in sites)
    assert round_flops(sites, layer_macs(model), 1) == expected


def _result(loop: float, batched: float, flower: float | None) -> dict[str, Any]:
    row = {
        "sites": 200,
        "method": "fedavg",
        "loop": loop,
        "batched": batched,
        "flops_per_round": 1e9,
        "floor": 0.01,
    }
    return {
        "machine": {"cpus": 2, "threads": 2, "torch": "2.13.0", "peak_gflops": 100.0},
        "params": {
            "methods": ["fedavg"],
            "rounds": {"loop": 2, "batched": 5},
            "agreement": {"rounds": 20},
        },
        "scale": [row],
        "flower": []
        if flower is None
        else [
            {
                "sites": 200,
                "rounds": 3,
                "seconds_per_round": flower,
                "wall_s": 40.0,
                "startup_s": 19.0,
            }
        ],
        "agreement": [
            {"method": "fedavg", "seed": 0, "loop": 0.8, "batched": 0.79, "max_site_diff": 0.02}
        ],
        "wall_s": 100.0,
    }


def test_the_page_states_each_target_as_met_or_missed() -> None:
    met = page(_result(loop=6.0, batched=0.3, flower=9.0))
    assert "**20.0x**, met." in met and "**30.0x**, met." in met
    missed = page(_result(loop=2.0, batched=0.3, flower=3.0))
    assert "**6.7x**, **missed**." in missed and "**10.0x**, **missed**." in missed
    assert "Flower was not measured" in page(_result(6.0, 0.3, None))
    metrics = metrics_of(_result(6.0, 0.3, 9.0))
    assert metrics["speedup_fedavg_200"] == 20.0 and metrics["vs_flower_200"] == 30.0
    assert metrics["agreement_max_mean_diff"] == 0.01


def test_the_command_writes_the_page_json_and_plot(tmp_path: Path) -> None:
    params = {
        "simulator": {
            "seed": 0,
            "sites": [2, 4],
            "methods": ["fedavg"],
            "rounds": {"loop": 1, "batched": 1},
            "flower": {},
            "agreement": {"rounds": 1, "seeds": [0], "methods": ["fedavg"]},
        }
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    assert main(["--params", str(path), "--out", str(out)]) == 0
    result = json.loads((out / "simulator.json").read_text())
    assert [r["sites"] for r in result["scale"]] == [2, 4]
    assert all(r["loop"] > 0 and r["batched"] > 0 and r["floor"] > 0 for r in result["scale"])
    assert (out / "simulator.png").stat().st_size > 0
    assert "| 4 | fedavg |" in (out / "simulator.md").read_text()
