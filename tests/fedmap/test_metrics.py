"""Validation metrics against hand-computed values."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

from fedmap.metrics import Scores, accuracy, balanced_accuracy, roc_auc, score


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
