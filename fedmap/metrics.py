"""Validation metrics of each task.

binary: accuracy (the primary metric), balanced accuracy and ROC-AUC on predicted probabilities.
survival: Harrell's C-index on the predicted log relative risks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from fedmap.data import TASKS, Task
from fedmap.models import predict_proba
from fedmap.survival import c_index

METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("accuracy", "balanced_accuracy", "roc_auc"),
    "survival": ("c_index",),
}
"""The metrics each task is scored with, in the order results.json lists them."""
PRIMARY_METRIC: dict[Task, str] = {"binary": "accuracy", "survival": "c_index"}
"""The metric a task's learning curves and method comparisons use."""


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
