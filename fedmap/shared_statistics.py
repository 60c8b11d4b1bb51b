"""Federated statistics: impute and standardise with global values, pooled from what each site
shares of its own training split, never a row (the recipe's ``statistics: federation``).

Each site sends, per input column, the count of present values, their sum and its median, and the
count of each level of a categorical column (:class:`ColumnSummary`); the pool gives the global
fill values (:func:`pooled_imputer`). Each site then imputes with them, encodes, and sends, per
feature, its row count, sum and sum of squares (:class:`FeatureSummary`); the pool gives the
global mean and standard deviation (:func:`pooled_standardiser`). These are aggregates, but a
median of an odd count is one patient's value: a site with few rows reveals as much in its
median as in its minimum, which is why a deployment does not run this yet (it would need a
round 0 through the bucket with the same signing and bounds as the updates); the simulator does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedmap.data import Standardiser
from fedmap.schema import missing_folder
from fedmap.tabular import SPLITS, Imputer, TabularTask, encode, read_inputs


@dataclass(frozen=True)
class ColumnSummary:
    """What a site shares of its training split's input columns (header order)."""

    count: NDArray[np.float64]
    """n_kj: rows where column j is present."""
    total: NDArray[np.float64]
    """s_kj = sum of the present values of column j."""
    median: NDArray[np.float64]
    """m_kj: the median of the present values (NaN when none is present)."""
    levels: tuple[tuple[int, ...], ...]
    """Per categorical column (recipe order), the count of each level."""


@dataclass(frozen=True)
class FeatureSummary:
    """What a site shares of its encoded, imputed training features."""

    rows: int
    total: NDArray[np.float64]
    squares: NDArray[np.float64]


def column_summary(
    inputs: NDArray[np.float64], columns: Sequence[str], task: TabularTask
) -> ColumnSummary:
    """(n_kj, s_kj, m_kj) per input column and the level counts of each categorical column;
    inputs: (N, C), NaN where missing, the columns in header order."""
    present = ~np.isnan(inputs)
    count = present.sum(axis=0).astype(np.float64)
    total = np.where(present, inputs, 0.0).sum(axis=0)
    median = np.array(
        [
            np.median(col[ok]) if ok.any() else np.nan
            for col, ok in zip(inputs.T, present.T, strict=True)
        ]
    )
    levels = tuple(
        tuple(int(np.sum(inputs[:, list(columns).index(c)] == v)) for v in task.categorical[c])
        for c in task.categorical
    )
    return ColumnSummary(count, total, median, levels)


def pooled_imputer(
    summaries: Sequence[ColumnSummary], columns: Sequence[str], task: TabularTask
) -> Imputer:
    """Global fill values. mean: sum_k s_kj / sum_k n_kj. median: the n-weighted median of the
    sites' medians m_kj (the smallest m with sum_{m_kj <= m} n_kj >= half of sum_k n_kj), an
    approximation of the pooled median that needs no row. Categorical: the level with the largest
    pooled count. A column present nowhere is ``unseen``, as at a single site."""
    count = np.sum([s.count for s in summaries], axis=0)
    fill = np.zeros(len(columns), dtype=np.float64)
    for j, column in enumerate(columns):
        if column in task.categorical:
            k = list(task.categorical).index(column)
            pooled = np.sum([s.levels[k] for s in summaries], axis=0)
            fill[j] = task.categorical[column][int(np.argmax(pooled))]
        elif count[j] > 0 and task.impute == "mean":
            fill[j] = np.sum([s.total[j] for s in summaries]) / count[j]
        elif count[j] > 0:
            fill[j] = weighted_median(
                np.array([s.median[j] for s in summaries]),
                np.array([s.count[j] for s in summaries]),
            )
    return Imputer(fill, np.asarray(count == 0, dtype=np.bool_))


def weighted_median(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """The smallest v_i with sum_{v_j <= v_i} w_j >= (1/2) sum_j w_j (zero weights ignored)."""
    keep = weights > 0
    order = np.argsort(values[keep], kind="stable")
    v, w = values[keep][order], weights[keep][order]
    return float(v[np.searchsorted(np.cumsum(w), w.sum() / 2.0)])


def pooled_standardiser(summaries: Sequence[FeatureSummary]) -> Standardiser:
    """mean_j = sum_k S_kj / N and std_j = sqrt(sum_k Q_kj / N - mean_j^2), N = sum_k N_k; a
    constant feature gets a unit scale, as a site's own does."""
    n = float(sum(s.rows for s in summaries))
    mean = np.sum([s.total for s in summaries], axis=0) / n
    var = np.maximum(np.sum([s.squares for s in summaries], axis=0) / n - mean**2, 0.0)
    std = np.sqrt(var)
    return Standardiser(mean, np.where(std > 1e-12, std, 1.0))


def federated_statistics(
    folders: Sequence[Path], task: TabularTask
) -> tuple[Imputer | None, Standardiser | None]:
    """The two pooling steps over the sites' training splits, as a simulation runs them: what
    ``load_tabular_site(..., shared=...)`` uses at every site instead of its own statistics."""
    parsed = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(missing_folder(folder, folder.name))
        parsed.append(read_inputs(folder / SPLITS[0], task))
    columns = task.input_columns(parsed[0][1])
    imputer = None
    if task.impute != "none":
        summaries = [column_summary(inputs, columns, task) for inputs, _ in parsed]
        imputer = pooled_imputer(summaries, columns, task)
    if not task.standardise:
        return imputer, None
    features = [encode(inputs, header, task, imputer) for inputs, header in parsed]
    return imputer, pooled_standardiser(
        [FeatureSummary(len(x), x.sum(axis=0), (x**2).sum(axis=0)) for x in features]
    )
