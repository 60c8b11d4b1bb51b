"""Validation metrics of each task.

binary: accuracy (the primary metric), balanced accuracy, ROC-AUC and AUPRC (discrimination), and
the Brier score and expected calibration error (calibration; lower is better), all on predicted
probabilities; ``reliability`` gives the binned curve a reliability plot draws.
survival: Harrell's C-index on the predicted log relative risks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from fedmap.data import TASKS, Task
from fedmap.models import predict_proba
from fedmap.survival import c_index

METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("accuracy", "balanced_accuracy", "roc_auc", "auprc", "brier", "ece"),
    "survival": ("c_index",),
}
"""The metrics each task is scored with, in the order results.json lists them."""
PRIMARY_METRIC: dict[Task, str] = {"binary": "accuracy", "survival": "c_index"}
"""The metric a task's learning curves and method comparisons use."""
LOWER_IS_BETTER = frozenset({"brier", "ece"})
"""The metrics where a smaller value is the better model; higher is better for every other."""


@dataclass(frozen=True)
class Scores:
    accuracy: float
    balanced_accuracy: float
    roc_auc: float
    auprc: float
    brier: float
    ece: float

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


def auprc(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Average precision, AP = sum_n (R_n - R_{n-1}) P_n, R_0 = 0.

    n runs over the distinct scores t_1 > t_2 > ... (a run of tied scores is one threshold);
    P_n and R_n are the precision and recall of predicting positive when p >= t_n. This is the
    step-wise area under the precision-recall curve (scikit-learn's average_precision_score, no
    interpolation). NaN when no positive is present.
    """
    y, p = _arrays(y_true, prob)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    sorted_p, sorted_y = p[order], y[order]
    last = np.r_[sorted_p[1:] != sorted_p[:-1], True]  # the last row of each run of ties
    tp = np.cumsum(sorted_y)[last]
    predicted = (np.flatnonzero(last) + 1).astype(np.float64)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * (tp / predicted)))


def brier(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Brier score, (1/N) sum_i (p_i - y_i)^2: 0 for certain, correct predictions."""
    y, p = _arrays(y_true, prob)
    return float(np.mean((p - y) ** 2))


@dataclass(frozen=True)
class Reliability:
    """A binned reliability curve: bin b holds the predictions with b/B <= p < (b+1)/B (the last
    bin also holds p = 1); an empty bin has count 0 and NaN means. A NaN prediction (a diverged
    model) falls in no bin. NaN != NaN, so compare two curves with a NaN-aware test
    (``numpy.testing.assert_array_equal``), not ``==``."""

    edges: tuple[float, ...]
    """The B + 1 bin edges 0, 1/B, ..., 1."""
    mean_predicted: tuple[float, ...]
    """mean(p in b) per bin."""
    observed: tuple[float, ...]
    """mean(y in b) per bin: the observed frequency of the positive class."""
    counts: tuple[int, ...]
    """n_b per bin."""

    @property
    def centres(self) -> tuple[float, ...]:
        return tuple((a + b) / 2 for a, b in zip(self.edges[:-1], self.edges[1:], strict=True))


def reliability(y_true: ArrayLike, prob: ArrayLike, bins: int = 10) -> Reliability:
    """The reliability curve of prob over ``bins`` equal-width bins of [0, 1] (last bin closed)."""
    y, p = _arrays(y_true, prob)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    keep = ~np.isnan(p)
    y, p = y[keep], p[keep]
    if np.any((p < 0) | (p > 1)):
        raise ValueError("reliability needs probabilities in [0, 1]")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / counts
        mean_y = np.bincount(index, weights=y.astype(np.float64), minlength=bins) / counts
    return Reliability(
        tuple(float(e) for e in np.linspace(0.0, 1.0, bins + 1)),
        tuple(float(v) for v in mean_p),
        tuple(float(v) for v in mean_y),
        tuple(int(n) for n in counts),
    )


def pool_reliability(curves: Sequence[Reliability]) -> Reliability:
    """Curves over the same bins as one: counts add, and each bin's means are the count-weighted
    means, sum_c n_cb m_cb / sum_c n_cb (so the pooled curve is that of all rows together)."""
    if not curves:
        raise ValueError("pool at least one reliability curve")
    edges = curves[0].edges
    if any(c.edges != edges for c in curves):
        raise ValueError("reliability curves to pool must share their bins")
    counts = np.sum([c.counts for c in curves], axis=0)

    def pooled(name: str) -> tuple[float, ...]:
        values = np.array([getattr(c, name) for c in curves], dtype=np.float64)
        n = np.array([c.counts for c in curves], dtype=np.float64)
        total = np.sum(np.where(n > 0, values * n, 0.0), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return tuple(float(v) for v in total / counts)

    return Reliability(
        edges, pooled("mean_predicted"), pooled("observed"), tuple(int(n) for n in counts)
    )


def ece(y_true: ArrayLike, prob: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error, sum_b (n_b / N) |mean(y in b) - mean(p in b)|, over ``bins``
    equal-width bins of [0, 1] (those of ``reliability``; empty bins add nothing). NaN when a
    prediction is NaN."""
    if np.any(np.isnan(_arrays(y_true, prob)[1])):
        return float("nan")
    curve = reliability(y_true, prob, bins)
    n = np.asarray(curve.counts, dtype=np.float64)
    gap = np.abs(np.asarray(curve.observed) - np.asarray(curve.mean_predicted))
    return float(np.sum(np.where(n > 0, n * gap, 0.0)) / n.sum())


def score(y_true: ArrayLike, prob: ArrayLike) -> Scores:
    return Scores(
        accuracy(y_true, prob),
        balanced_accuracy(y_true, prob),
        roc_auc(y_true, prob),
        auprc(y_true, prob),
        brier(y_true, prob),
        ece(y_true, prob),
    )


@dataclass(frozen=True)
class TaskScores:
    """A model's scores on one split, for its task: ``values`` holds METRICS[task] in order."""

    task: Task
    values: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if tuple(self.values) != METRICS[self.task]:
            raise ValueError(
                f"{self.task} scores must be {', '.join(METRICS[self.task])}, "
                f"got {', '.join(self.values) or 'none'}"
            )

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.task]

    @property
    def primary(self) -> float:
        return self.values[self.primary_metric]

    def __getitem__(self, metric: str) -> float:
        return self.values[metric]

    def as_dict(self) -> dict[str, float]:
        return dict(self.values)


def predict_output(model: nn.Module, x: Tensor, task: Task) -> Tensor:
    """What the metrics of task score, in evaluation mode without a graph.

    binary: p(y = 1 | x) = sigmoid(logit). survival: the raw log relative risk r; a sigmoid would
    saturate large risks into ties and so change the C-index.
    """
    if task == "binary":
        return predict_proba(model, x)
    model.eval()
    with torch.no_grad():
        output: Tensor = model(x)
    return output


def score_task(task: Task, y_true: ArrayLike, prediction: ArrayLike) -> TaskScores:
    """METRICS[task] of prediction (from ``predict_output``) against y_true.

    binary: y_true of shape (N,), 0/1. survival: shape (N, 2), the columns (time, event).
    """
    if task == "binary":
        return TaskScores(task, score(y_true, prediction).as_dict())
    if task == "survival":
        y = np.asarray(y_true, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != 2:
            raise ValueError(f"survival targets must have shape (N, 2), got {y.shape}")
        return TaskScores(task, {"c_index": c_index(y[:, 0], y[:, 1], prediction)})
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
