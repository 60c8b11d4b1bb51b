"""Validation metrics against hand-computed values."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import torch

from fedmap.metrics import (
    METRICS,
    PRIMARY_METRIC,
    Scores,
    TaskScores,
    accuracy,
    balanced_accuracy,
    predict_output,
    roc_auc,
    score,
    score_task,
)
from fedmap.models import LogisticRegression


def _auc_pairs(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in product(pos, neg))
    return total / (len(pos) * len(neg))


def test_accuracy() -> None:
    y = [0, 1, 1, 0, 1]
    p = [0.2, 0.5, 0.4, 0.7, 0.9]  # 0.5 counts as positive
    assert accuracy(y, p) == pytest.approx(3 / 5)
    assert accuracy(y, p, threshold=0.3) == pytest.approx(4 / 5)
    assert accuracy(y, p, threshold=0.95) == pytest.approx(2 / 5)
    assert accuracy([1, 0], [1.0, 0.0]) == 1.0


def test_balanced_accuracy() -> None:
    y = [0, 0, 0, 1]
    p = [0.1, 0.6, 0.2, 0.9]
    assert balanced_accuracy(y, p) == pytest.approx((2 / 3 + 1.0) / 2)
    assert accuracy(y, p) == pytest.approx(3 / 4)
    # majority-class predictor: accuracy 0.85, balanced accuracy 0.5
    y_skew = np.r_[np.zeros(85), np.ones(15)]
    assert accuracy(y_skew, np.zeros(100)) == pytest.approx(0.85)
    assert balanced_accuracy(y_skew, np.zeros(100)) == pytest.approx(0.5)
    # a single class present: its recall
    assert balanced_accuracy([1, 1, 1, 1], [0.9, 0.1, 0.8, 0.7]) == pytest.approx(0.75)


def test_roc_auc_known_examples() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # one tie between a positive and a negative counts one half
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert roc_auc([0, 1, 0, 1, 1], [0.3] * 5) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    p = rng.integers(0, 5, 40) / 4.0  # only five distinct scores: many ties
    assert roc_auc(y, p) == pytest.approx(_auc_pairs(y, p), abs=1e-12)


def test_roc_auc_single_class_is_nan() -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(roc_auc([0, 0], [0.2, 0.5]))


@pytest.mark.parametrize("fn", [accuracy, balanced_accuracy, roc_auc])
def test_shape_mismatch_and_empty_raise(fn: object) -> None:
    with pytest.raises(ValueError, match="equal, non-empty"):
        fn([0, 1, 1], [0.2, 0.3])  # type: ignore[operator]
    with pytest.raises(ValueError, match="equal, non-empty"):
        fn([], [])  # type: ignore[operator]


def test_score_bundles_the_three() -> None:
    s = score([0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8])
    assert s == Scores(accuracy=0.5, balanced_accuracy=0.5, roc_auc=0.75)
    assert s.as_dict() == {"accuracy": 0.5, "balanced_accuracy": 0.5, "roc_auc": 0.75}


def test_primary_metric_of_each_task() -> None:
    assert PRIMARY_METRIC == {"binary": "accuracy", "survival": "c_index"}
    assert METRICS["binary"] == ("accuracy", "balanced_accuracy", "roc_auc")
    assert METRICS["survival"] == ("c_index",)


def test_score_task_binary_is_score() -> None:
    s = score_task("binary", [0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8])
    assert s.task == "binary" and s.primary_metric == "accuracy"
    assert s.as_dict() == {"accuracy": 0.5, "balanced_accuracy": 0.5, "roc_auc": 0.75}
    assert s.primary == 0.5 and s["roc_auc"] == 0.75


def test_score_task_survival_is_c_index() -> None:
    # (time, event) rows; comparable pairs (earlier event first): (0,1), (0,2), (1,2); the risks
    # order two of them correctly (0 > 1 and 0 > 2) and one wrongly (1 < 2): C = 2/3
    y = [[1.0, 1.0], [2.0, 1.0], [3.0, 0.0]]
    s = score_task("survival", y, [2.0, 0.0, 1.0])
    assert s.task == "survival" and s.as_dict() == {"c_index": pytest.approx(2 / 3)}
    assert s.primary_metric == "c_index" and s.primary == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        score_task("survival", [1.0, 2.0, 3.0], [2.0, 0.0, 1.0])


def test_task_scores_must_hold_the_tasks_metrics() -> None:
    with pytest.raises(ValueError, match="survival scores must be c_index"):
        TaskScores("survival", {"accuracy": 0.5})
    with pytest.raises(ValueError, match="binary scores must be accuracy"):
        TaskScores("binary", {"accuracy": 0.5})
    with pytest.raises(ValueError, match="task must be one of"):
        TaskScores("regression", {})  # type: ignore[arg-type]


def test_predict_output_probability_or_raw_risk() -> None:
    model = LogisticRegression(1)
    with torch.no_grad():
        model.head.weight.fill_(50.0)
        model.head.bias.zero_()
    model.train()
    x = torch.tensor([[1.0], [2.0], [-1.0]])
    prob = predict_output(model, x, "binary")
    torch.testing.assert_close(prob, torch.sigmoid(torch.tensor([50.0, 100.0, -50.0])))
    risk = predict_output(model, x, "survival")
    # raw risks keep the order that sigmoid saturates away (sigmoid(50) == sigmoid(100) in float32)
    assert risk.tolist() == [50.0, 100.0, -50.0]
    assert prob[0] == prob[1]
    assert not model.training and not risk.requires_grad
