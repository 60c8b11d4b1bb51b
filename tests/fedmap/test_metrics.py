"""Validation metrics against hand-computed values."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import torch

from fedmap.metrics import (
    LOWER_IS_BETTER,
    METRICS,
    PRIMARY_METRIC,
    Reliability,
    Scores,
    TaskScores,
    accuracy,
    auprc,
    balanced_accuracy,
    brier,
    ece,
    pool_reliability,
    predict_output,
    reliability,
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


def test_auprc_hand_computed() -> None:
    # ranked 0.9 (y=1), 0.8 (0), 0.7 (1), 0.1 (0): P@1 = 1 at R = 1/2, P@3 = 2/3 at R = 1
    assert auprc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert auprc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    # a tie is one threshold: {0.5, 0.5} gives P = 1/2 at R = 1, never P = 1 at R = 1/2
    assert auprc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # 0.9 (1); then the tie 0.6 {1, 0, 0}: R 1/3 at P 1, R 2/3 at P 2/4; then 0.2 (1): R 1 at 3/5
    y, p = [1, 1, 0, 0, 1], [0.9, 0.6, 0.6, 0.6, 0.2]
    assert auprc(y, p) == pytest.approx((1 + 2 / 4 + 3 / 5) / 3)
    # all negatives first: the prevalence
    assert auprc([0, 1, 1, 0], [0.3] * 4) == pytest.approx(0.5)
    assert math.isnan(auprc([0, 0, 0], [0.2, 0.5, 0.9]))


def test_brier_hand_computed() -> None:
    assert brier([0, 1, 1, 0], [0.1, 0.6, 1.0, 0.5]) == pytest.approx(
        (0.01 + 0.16 + 0.0 + 0.25) / 4
    )
    assert brier([1, 0], [1.0, 0.0]) == 0.0
    assert brier([1, 0], [0.0, 1.0]) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_auprc_and_brier_match_scikit_learn_with_ties(seed: int) -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = 30 + 17 * seed
    y = rng.integers(0, 2, n)
    # even seeds: only seven distinct scores (many ties); odd: continuous scores
    p = rng.integers(0, 7, n) / 6.0 if seed % 2 == 0 else rng.random(n)
    assert auprc(y, p) == pytest.approx(sk.average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(sk.brier_score_loss(y, p), abs=1e-12)


def test_reliability_bins_and_empty_bins() -> None:
    y = [0, 1, 1, 0, 1, 1]
    p = [0.05, 0.15, 0.45, 0.5, 0.95, 1.0]  # 0.5 opens bin 2 of 2; 1.0 falls in the last bin
    curve = reliability(y, p, bins=4)
    assert curve.edges == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert curve.centres == (0.125, 0.375, 0.625, 0.875)
    assert curve.counts == (2, 1, 1, 2)
    assert curve.mean_predicted == pytest.approx((0.1, 0.45, 0.5, 0.975))
    assert curve.observed == pytest.approx((0.5, 1.0, 0.0, 1.0))
    sparse = reliability([1, 0], [0.9, 0.95], bins=10)
    assert sparse.counts == (0,) * 9 + (2,)
    assert all(math.isnan(v) for v in sparse.observed[:9] + sparse.mean_predicted[:9])
    assert sparse.observed[9] == 0.5 and sparse.mean_predicted[9] == pytest.approx(0.925)
    # a NaN prediction falls in no bin
    assert reliability([1, 0, 1], [0.9, math.nan, 0.1], bins=2).counts == (1, 1)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        reliability([1, 0], [1.5, 0.2])
    with pytest.raises(ValueError, match="bins must be at least 1"):
        reliability([1, 0], [0.5, 0.2], bins=0)


def test_ece_zero_when_each_bin_is_calibrated() -> None:
    # p = 0.2 five times with one positive, 0.75 four times with three, 1.0 ten times all positive
    y = [1, 0, 0, 0, 0] + [1, 1, 1, 0] + [1] * 10
    p = [0.2] * 5 + [0.75] * 4 + [1.0] * 10
    assert ece(y, p) == pytest.approx(0.0, abs=1e-12)
    assert ece([0, 1], [0.0, 1.0]) == 0.0


def test_ece_hand_computed() -> None:
    # 10 bins: {0.1, 0.15} in bin 1 (mean p 0.125, observed 1/2); {0.62} in bin 6 (0 observed);
    # {0.91, 0.99} in bin 9 (mean 0.95, observed 1)
    y = [0, 1, 0, 1, 1]
    p = [0.1, 0.15, 0.62, 0.91, 0.99]
    expected = (2 * abs(0.5 - 0.125) + 1 * 0.62 + 2 * abs(1 - 0.95)) / 5
    assert ece(y, p) == pytest.approx(expected)
    assert ece(y, p) == pytest.approx(0.294)
    # two bins: [0, 0.5) holds p 0.1, 0.15 (observed 1/2), [0.5, 1] the rest (observed 2/3)
    two = (2 * abs(0.5 - 0.125) + 3 * abs(2 / 3 - (0.62 + 0.91 + 0.99) / 3)) / 5
    assert ece(y, p, bins=2) == pytest.approx(two)
    assert math.isnan(ece([0, 1], [math.nan, 0.5]))


def test_pool_reliability_is_the_curve_of_all_rows() -> None:
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 90), rng.random(90)
    parts = [reliability(y[:30], p[:30]), reliability(y[30:], p[30:])]
    pooled, whole = pool_reliability(parts), reliability(y, p)
    assert pooled.counts == whole.counts and sum(pooled.counts) == 90
    np.testing.assert_allclose(pooled.observed, whole.observed, equal_nan=True)
    np.testing.assert_allclose(pooled.mean_predicted, whole.mean_predicted, equal_nan=True)
    with pytest.raises(ValueError, match="share their bins"):
        pool_reliability([parts[0], reliability(y, p, bins=5)])
    with pytest.raises(ValueError, match="at least one"):
        pool_reliability([])
    assert isinstance(pooled, Reliability)


@pytest.mark.parametrize("fn", [accuracy, balanced_accuracy, roc_auc, auprc, brier, ece])
def test_shape_mismatch_and_empty_raise(fn: object) -> None:
    with pytest.raises(ValueError, match="equal, non-empty"):
        fn([0, 1, 1], [0.2, 0.3])  # type: ignore[operator]
    with pytest.raises(ValueError, match="equal, non-empty"):
        fn([], [])  # type: ignore[operator]


# [0, 0, 1, 1] at [0.1, 0.6, 0.35, 0.8]: ranked 0.8 (1), 0.6 (0), 0.35 (1), 0.1 (0), so
# AP = 1/2 * 1 + 1/2 * 2/3; Brier (0.01 + 0.36 + 0.4225 + 0.04) / 4; each row alone in its bin,
# so ECE = (0.1 + 0.6 + 0.65 + 0.2) / 4
HAND = {
    "accuracy": 0.5,
    "balanced_accuracy": 0.5,
    "roc_auc": 0.75,
    "auprc": pytest.approx(5 / 6),
    "brier": pytest.approx(0.208125),
    "ece": pytest.approx(0.3875),
}


def test_score_bundles_the_six() -> None:
    s = score([0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8])
    assert s == Scores(
        accuracy=0.5,
        balanced_accuracy=0.5,
        roc_auc=0.75,
        auprc=pytest.approx(5 / 6),  # type: ignore[arg-type]
        brier=pytest.approx(0.208125),  # type: ignore[arg-type]
        ece=pytest.approx(0.3875),  # type: ignore[arg-type]
    )
    assert s.as_dict() == HAND
    assert list(s.as_dict()) == list(METRICS["binary"])


def test_primary_metric_of_each_task() -> None:
    assert PRIMARY_METRIC == {"binary": "accuracy", "survival": "c_index"}
    assert METRICS["binary"] == (
        "accuracy",
        "balanced_accuracy",
        "roc_auc",
        "auprc",
        "brier",
        "ece",
    )
    assert METRICS["survival"] == ("c_index",)
    assert sorted(LOWER_IS_BETTER) == ["brier", "ece"]


def test_score_task_binary_is_score() -> None:
    s = score_task("binary", [0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8])
    assert s.task == "binary" and s.primary_metric == "accuracy"
    assert s.as_dict() == HAND
    assert s.primary == 0.5 and s["roc_auc"] == 0.75 and s["brier"] == pytest.approx(0.208125)


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
