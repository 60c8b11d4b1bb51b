"""Any tabular federation: how a site's own CSV rows become features and a target.

A :class:`TabularTask` is the ``task`` section of a federation file (defined in ``fedmap.schema``,
which reads that file without torch). It names the target (a binary label, or the event and time
columns of a survival task), the columns to drop, the categorical columns to one-hot encode with
their levels, the tokens that mean "missing" and whether features are standardised. Each site
applies it to its own ``train.csv`` and ``val.csv``; the statistics it fits never leave the site.

The recipe reproduces FLamby's preprocessing when given FLamby's settings (see
``federations/heart_disease.yaml`` and ``docs/byod.md``): drop columns, drop any row with a missing
value in the columns kept, one-hot encode with the first level dropped (``pd.get_dummies
(drop_first=True)`` over the fixed levels), binarise the label, standardise each site with its own
training statistics. Errors name the file, row, column and rule, never a cell: a cell is patient data.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from fedmap.data import SiteData, Standardiser
from fedmap.schema import TabularTask as TabularTask
from fedmap.schema import level_name, missing_folder

SPLITS = ("train.csv", "val.csv")


class TabularError(ValueError):
    """A site file that does not fit the task; the message names file, row, column and rule."""


@dataclass(frozen=True)
class Imputer:
    """What fills a missing input: one value per input column, fitted on a site's own rows.

    median: fill_j = median_i x_ij over the rows where x_ij is present; mean: their mean; a
    categorical column takes its most frequent level (the first listed on a tie). A column with no
    value present at all (``unseen``) is treated as missing in every row it is applied to, so it
    stays one constant (0, or its first level) and its indicator 1 on every split: the model never
    sees values the site's statistics know nothing of. The values stay at the site, as the
    standardisation statistics do."""

    fill: NDArray[np.float64]
    unseen: NDArray[np.bool_]

    @staticmethod
    def fit(inputs: NDArray[np.float64], columns: Sequence[str], task: TabularTask) -> Imputer:
        fill = np.zeros(len(columns), dtype=np.float64)
        for j, column in enumerate(columns):
            present = inputs[:, j][~np.isnan(inputs[:, j])]
            if column in task.categorical:
                levels = task.categorical[column]
                counts = [int(np.sum(present == v)) for v in levels]
                fill[j] = levels[int(np.argmax(counts))]
            elif present.size:
                fill[j] = np.median(present) if task.impute == "median" else np.mean(present)
        return Imputer(fill, np.asarray(np.isnan(inputs).all(axis=0), dtype=np.bool_))

    def missing(self, inputs: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Where an input counts as missing: its cell was, or the column is ``unseen``."""
        return np.isnan(inputs) | self.unseen

    def __call__(self, inputs: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.where(self.missing(inputs), self.fill, inputs)


@dataclass(frozen=True)
class TabularSplit:
    """One file after the recipe: features, target(s) and how many rows were dropped."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    """binary: (N,) 0/1; survival: (N, 2) as (time, event)."""
    columns: tuple[str, ...]
    dropped_missing: int
    """Rows left out for a missing value: any kept cell without imputation, else the target."""
    imputed: int = 0
    """Rows kept with at least one input filled in by the imputer."""
    imputer: Imputer | None = None
    """The imputer applied (None without imputation): the training split's, for the others."""

    @property
    def rows(self) -> int:
        """Data rows in the file: those kept and those dropped."""
        return len(self.y) + self.dropped_missing


@dataclass(frozen=True)
class _Parsed:
    inputs: NDArray[np.float64]  # (N, C) input columns in header order, NaN where missing
    targets: NDArray[np.float64]  # (N, T) the task's targets, in task.targets order
    header: list[str]
    dropped: int


def _number(path: Path, row: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise TabularError(f"{path}: row {row}, column {column!r}: not a number") from None
    if not math.isfinite(value):
        raise TabularError(f"{path}: row {row}, column {column!r}: not a finite number")
    return value


def _rows(path: Path, name: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        raise TabularError(f"{name}: empty file")
    return [h.strip() for h in rows[0]], rows[1:]


def _parse(
    path: Path, task: TabularTask, name: Path, targets: bool, columns: Sequence[str] | None = None
) -> _Parsed:
    """Each row's inputs (NaN where missing) and, when targets, its targets. A row missing its
    target, or (without imputation) any kept cell, is dropped and counted; every other problem
    is an error naming name, row and column. columns: the features the header must give."""
    header, body = _rows(path, name)
    inputs = task.input_columns(header)
    wanted = [*task.targets] if targets else []
    absent = [c for c in [*wanted, *task.categorical] if c not in header]
    if absent and columns is None:
        raise TabularError(f"{name}: column(s) {', '.join(map(repr, absent))} missing")
    if isinstance(task.missing_indicators, tuple):
        unknown = [c for c in task.missing_indicators if c not in inputs]
        if unknown:
            raise TabularError(
                f"{name}: missing_indicators: {', '.join(map(repr, unknown))} is not an input "
                "column of the file"
            )
    if columns is not None and (absent or task.feature_columns(header) != list(columns)):
        raise TabularError(
            f"{name}: the columns do not give the model's {len(columns)} features "
            f"{', '.join(columns)} in that order"
        )
    at = {c: header.index(c) for c in [*inputs, *wanted]}
    missing = {"", *task.missing}
    x_rows: list[list[float]] = []
    y_rows: list[list[float]] = []
    dropped = 0
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise TabularError(f"{name}: row {i} has {len(row)} cells, the header {len(header)}")
        cells = {c: row[j].strip() for c, j in at.items()}
        gaps = [c for c, cell in cells.items() if cell in missing]
        if any(c in wanted for c in gaps) or (gaps and task.impute == "none" and targets):
            dropped += 1
            continue
        values = {
            c: math.nan if cell in missing else _number(name, i, c, cell)
            for c, cell in cells.items()
        }
        if gaps and not targets and task.impute == "none":
            raise TabularError(
                f"{name}: row {i}, column {gaps[0]!r}: missing or infinite value; every "
                "feature of a row to score must be a number (or set task.impute)"
            )
        for column, levels in task.categorical.items():
            value = values[column]
            if not math.isnan(value) and value not in levels:
                allowed = ", ".join(level_name(v) for v in levels)
                raise TabularError(
                    f"{name}: row {i}, column {column!r}: not one of the levels {allowed}"
                )
        x_rows.append([values[c] for c in inputs])
        if targets:
            y_rows.append(_target(name, i, task, values))
    x = np.asarray(x_rows, dtype=np.float64).reshape(len(x_rows), len(inputs))
    y = np.asarray(y_rows, dtype=np.float64).reshape(len(y_rows), len(wanted))
    return _Parsed(x, y, header, dropped)


def read_inputs(path: Path, task: TabularTask) -> tuple[NDArray[np.float64], list[str]]:
    """A training file's inputs (N, C) in header order, NaN where missing, of the rows the
    recipe keeps, and the header: what a site summarises for federated statistics."""
    parsed = _parse(path, task, path, targets=True)
    return parsed.inputs, parsed.header


def encode(
    inputs: NDArray[np.float64], header: Sequence[str], task: TabularTask, imputer: Imputer | None
) -> NDArray[np.float64]:
    """Inputs (NaN where missing) -> the model's features ``task.feature_columns(header)``:
    the numeric inputs (imputed), the categorical indicators, then ``1(x_ij missing)`` for each
    indicator column."""
    columns = task.input_columns(header)
    filled = inputs if imputer is None else imputer(inputs)
    numeric = [j for j, c in enumerate(columns) if c not in task.categorical]
    parts = [filled[:, numeric]]
    for j, column in enumerate(columns):
        if column in task.categorical:
            levels = task.categorical[column]
            parts.append(np.stack([filled[:, j] == v for v in levels[1:]], axis=1))
    flagged = set(task.indicator_columns(header))
    gaps = np.isnan(inputs) if imputer is None else imputer.missing(inputs)
    parts += [gaps[:, [j]].astype(np.float64) for j, c in enumerate(columns) if c in flagged]
    return np.concatenate([p.astype(np.float64) for p in parts], axis=1)


def read_tabular(path: Path, task: TabularTask, imputer: Imputer | None = None) -> TabularSplit:
    """Apply task to one CSV file with a header row. With ``task.impute``, missing inputs are
    filled by imputer, or by one fitted on this file's own rows when none is given (a site fits
    it on its training split and applies it to the others)."""
    parsed = _parse(path, task, path, targets=True)
    if task.impute != "none" and imputer is None:
        imputer = Imputer.fit(parsed.inputs, task.input_columns(parsed.header), task)
    x = encode(parsed.inputs, parsed.header, task, imputer)
    y = parsed.targets
    # survival: (event, time) -> (time, event); binary: the one column
    y = y[:, ::-1].copy() if task.type == "survival" else y[:, 0]
    imputed = int(np.isnan(parsed.inputs).any(axis=1).sum())
    columns = tuple(task.feature_columns(parsed.header))
    return TabularSplit(x, y, columns, parsed.dropped, imputed, imputer)


def _target(path: Path, row: int, task: TabularTask, values: Mapping[str, float]) -> list[float]:
    value = values[task.target]
    if task.type == "binary":
        if task.positive_above is not None:
            return [1.0 if value > task.positive_above else 0.0]
        if value not in (0.0, 1.0):
            raise TabularError(f"{path}: row {row}, column {task.target!r}: must be 0 or 1")
        return [value]
    assert task.time is not None
    if value not in (0.0, 1.0):
        raise TabularError(f"{path}: row {row}, column {task.target!r}: the event must be 0 or 1")
    time = values[task.time]
    if not np.isfinite(time) or time < 0:
        raise TabularError(f"{path}: row {row}, column {task.time!r}: time must be >= 0")
    return [value, time]


def _features_only(
    path: Path, task: TabularTask, columns: Sequence[str]
) -> tuple[_Parsed, list[str]]:
    parsed = _parse(path, task, Path(path.name), targets=False, columns=columns)
    return parsed, task.input_columns(parsed.header)


def read_features_only(
    path: Path, task: TabularTask, columns: Sequence[str], imputer: Imputer | None = None
) -> NDArray[np.float64]:
    """A features-only file (a tier-3 site's ``reference.csv`` or ``score.csv``) as the model's
    inputs ``columns``: the recipe without its targets.

    Dropped columns and the targets are ignored when present and not required. Without
    imputation a row cannot be scored without all its features: a missing value is an error,
    not a dropped row, as is a level the recipe does not list. With ``task.impute``, missing
    inputs are filled by imputer, which must be given (fitted on ``reference.csv``:
    :func:`scoring_features` reads both files so). Blank lines and a UTF-8 byte-order mark are ignored, as the
    contract's reader ignores them. Errors name the file (not its folder), row and column,
    never a cell.
    """
    if task.impute != "none" and imputer is None:
        raise ValueError(
            "an imputing recipe fills a file to score with reference.csv's values: pass its "
            "imputer, or read both files with scoring_features"
        )
    parsed, _ = _features_only(path, task, columns)
    return encode(parsed.inputs, parsed.header, task, imputer)


@dataclass(frozen=True)
class ScoringFeatures:
    """A tier-3 site's two files as the model's inputs, imputed with reference.csv's values."""

    reference: NDArray[np.float64]
    rows: NDArray[np.float64]
    imputed: int
    """Rows of score.csv with at least one input filled in."""


def scoring_features(
    reference: Path, score: Path, task: TabularTask, columns: Sequence[str]
) -> ScoringFeatures:
    """``reference.csv`` fixes the imputation values (and, by the caller, the standardisation);
    ``score.csv`` is read with them, so every row to score gets a prediction."""
    ref, inputs = _features_only(reference, task, columns)
    imputer = Imputer.fit(ref.inputs, inputs, task) if task.impute != "none" else None
    rows, _ = _features_only(score, task, columns)
    return ScoringFeatures(
        encode(ref.inputs, ref.header, task, imputer),
        encode(rows.inputs, rows.header, task, imputer),
        int(np.isnan(rows.inputs).any(axis=1).sum()),
    )


def load_tabular_site(
    folder: Path,
    task: TabularTask,
    device: torch.device | str = "cpu",
    name: str | None = None,
    shared: tuple[Imputer | None, Standardiser | None] | None = None,
) -> SiteData:
    """A site's ``train.csv`` and ``val.csv`` as tensors, standardised with the training rows'
    statistics when the task says so (a constant column maps to 0). shared: an imputer and a
    standardiser pooled over the federation (``fedmap.shared_statistics``) used instead of the
    site's own."""
    if not folder.is_dir():
        raise TabularError(missing_folder(folder, name or folder.name))
    imputer, pooled = shared if shared is not None else (None, None)
    train = read_tabular(folder / SPLITS[0], task, imputer)
    val = read_tabular(folder / SPLITS[1], task, train.imputer)
    site = name or folder.name
    if len(train.y) < 2:
        raise TabularError(f"{folder / SPLITS[0]}: {site} has {len(train.y)} usable rows")
    if train.columns != val.columns:
        raise TabularError(f"{folder}: train.csv and val.csv have different columns")
    scale = (pooled or Standardiser.fit(train.x)) if task.standardise else None

    def features(x: NDArray[np.float64]) -> torch.Tensor:
        z = scale(x) if scale is not None else x
        return torch.as_tensor(z, dtype=torch.float32, device=device)

    def target(y: NDArray[np.float64]) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.float32, device=device)

    return SiteData(
        site,
        features(train.x),
        target(train.y),
        features(val.x),
        target(val.y),
        task=task.type,
        dropped=(train.dropped_missing, val.dropped_missing),
        imputed=(train.imputed, val.imputed),
    )
