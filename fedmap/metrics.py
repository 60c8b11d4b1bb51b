"""Validation metrics: accuracy, balanced accuracy and ROC-AUC on predicted probabilities."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class Scores:
    accuracy: float
    balanced_accuracy: float
    roc_auc: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _arrays(y_true: ArrayLike, prob: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(
            f"need equal, non-empty label and score arrays, got {y.shape} and {p.shape}"
        )
    return y, p


def accuracy(y_true: ArrayLike, prob: ArrayLike, threshold: float = 0.5) -> float:
    """(1/N) sum_i [1(p_i >= threshold) == y_i]."""
    y, p = _arrays(y_true, prob)
    return float(np.mean((p >= threshold).astype(np.int64) == y))


def balanced_accuracy(y_true: ArrayLike, prob: ArrayLike, threshold: float = 0.5) -> float:
    """Mean of the recalls of the classes present: (TPR + TNR) / 2 when both are present."""
    y, p = _arrays(y_true, prob)
    pred = (p >= threshold).astype(np.int64)
    recalls = [np.mean(pred[y == c] == c) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls))


def roc_auc(y_true: ArrayLike, prob: ArrayLike) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half.

    Computed as the Mann-Whitney U statistic with mid-ranks; NaN when only one class is present.
    """
    y, p = _arrays(y_true, prob)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # mid-ranks: every member of a run of equal scores gets the run's mean rank
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def score(y_true: ArrayLike, prob: ArrayLike) -> Scores:
    return Scores(accuracy(y_true, prob), balanced_accuracy(y_true, prob), roc_auc(y_true, prob))
