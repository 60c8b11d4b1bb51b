"""Runs: where a federation's data comes from and how results become records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmap.config import ExperimentConfig
from fedmap.data import write_site
from fedmap.experiment import Run, federation_folder, load_sites, records_of
from fedmap.metrics import METRICS, TaskScores
from fedmap.simulator import SimulationResult
from fedmap.synthetic import generate


def test_federation_folder() -> None:
    assert federation_folder(Path("/d"), "label-skew", 3) == Path("/d/seed-3/label-skew")


def test_load_sites_from_disk_matches_in_memory(tmp_path: Path) -> None:
    config = ExperimentConfig()
    for split in generate("quantity-skew", 2):
        write_site(split, federation_folder(tmp_path, "quantity-skew", 2))
    disk = load_sites(Run("quantity-skew", "fedmap", 2, tmp_path), config)
    memory = load_sites(Run("quantity-skew", "fedmap", 2), config)
    assert [s.name for s in disk] == [s.name for s in memory]
    assert [s.num_train for s in disk] == [1400] * 5 + [350] * 5
    for a, b in zip(disk, memory, strict=True):
        torch.testing.assert_close(a.x_train, b.x_train, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a.x_val, b.x_val, rtol=1e-6, atol=1e-6)
        assert torch.equal(a.y_val, b.y_val)
        # standardised with the site's own training statistics
        np.testing.assert_allclose(a.x_train.mean(0).numpy(), 0.0, atol=1e-4)


def _binary(accuracy: float, balanced: float, auc: float) -> TaskScores:
    values = {"accuracy": accuracy, "balanced_accuracy": balanced, "roc_auc": auc}
    return TaskScores("binary", {**values, "auprc": 0.5, "brier": 0.25, "ece": 0.1})


def test_records_of() -> None:
    final = {
        "site-01": _binary(0.9, 0.8, 0.95),
        "site-02": _binary(0.7, 0.6, float("nan")),
    }
    result = SimulationResult("fedmap", 1, "site-02", ("site-01", "site-02"), final, [], 0.1)
    records = records_of(Run("label-skew", "fedmap", 1), result)
    assert [r.site for r in records] == ["site-01", "site-02"]
    assert records[0].as_dict() == {
        "scenario": "label-skew",
        "method": "fedmap",
        "seed": 1,
        "site": "site-01",
        "accuracy": 0.9,
        "balanced_accuracy": 0.8,
        "roc_auc": 0.95,
        "auprc": 0.5,
        "brier": 0.25,
        "ece": 0.1,
    }
    # the identifying keys, then the task's metrics in METRICS order (test_metrics pins that list)
    assert list(records[0].as_dict()) == ["scenario", "method", "seed", "site", *METRICS["binary"]]
    assert records[1].accuracy == 0.7 and records[1].metric("balanced_accuracy") == 0.6


def test_survival_records_carry_c_index_in_place_of_accuracy() -> None:
    final = {"region-0": TaskScores("survival", {"c_index": 0.75})}
    result = SimulationResult(
        "fedmap", 0, "region-0", ("region-0",), final, [[0.75]], 0.1, "survival"
    )
    (record,) = records_of(Run("tcga-brca", "fedmap", 0), result)
    assert record.as_dict() == {
        "scenario": "tcga-brca",
        "method": "fedmap",
        "seed": 0,
        "site": "region-0",
        "c_index": 0.75,
    }
    assert record.metric("c_index") == 0.75
    with pytest.raises(KeyError, match="no 'accuracy'"):
        _ = record.accuracy
