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
from fedmap.schema import level_name

SPLITS = ("train.csv", "val.csv")


class TabularError(ValueError):
    """A site file that does not fit the task; the message names file, row, column and rule."""


@dataclass(frozen=True)
class TabularSplit:
    """One file after the recipe: features, target(s) and how many rows were dropped."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    """binary: (N,) 0/1; survival: (N, 2) as (time, event)."""
    columns: tuple[str, ...]
    dropped_missing: int


def _number(path: Path, row: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise TabularError(f"{path}: row {row}, column {column!r}: not a number") from None
    if not math.isfinite(value):
        raise TabularError(f"{path}: row {row}, column {column!r}: not a finite number")
    return value


def read_tabular(path: Path, task: TabularTask) -> TabularSplit:
    """Apply task to one CSV file with a header row."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        raise TabularError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    needed = [*task.targets, *task.categorical]
    absent = [c for c in needed if c not in header]
    if absent:
        raise TabularError(f"{path}: column(s) {', '.join(map(repr, absent))} missing")
    columns = task.feature_columns(header)
    kept = [j for j, c in enumerate(header) if c not in task.drop]
    missing = {"", *task.missing}
    x_rows: list[list[float]] = []
    y_rows: list[list[float]] = []
    dropped = 0
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TabularError(f"{path}: row {i} has {len(row)} cells, the header {len(header)}")
        cells = {header[j]: row[j].strip() for j in kept}
        if any(cell in missing for cell in cells.values()):
            dropped += 1
            continue
        values = {c: _number(path, i, c, cell) for c, cell in cells.items()}
        x_rows.append(_features(path, i, task, header, values))
        y_rows.append(_target(path, i, task, values))
    x = np.asarray(x_rows, dtype=np.float64).reshape(len(x_rows), len(columns))
    y = np.asarray(y_rows, dtype=np.float64).reshape(len(y_rows), len(task.targets))
    # survival: (event, time) -> (time, event); binary: the one column
    y = y[:, ::-1].copy() if task.type == "survival" else y[:, 0]
    return TabularSplit(x, y, tuple(columns), dropped)


def _features(
    path: Path, row: int, task: TabularTask, header: Sequence[str], values: Mapping[str, float]
) -> list[float]:
    skipped = {*task.drop, *task.targets, *task.categorical}
    out = [values[c] for c in header if c not in skipped]
    for column in header:
        if column not in task.categorical:
            continue
        levels = task.categorical[column]
        if values[column] not in levels:
            allowed = ", ".join(level_name(v) for v in levels)
            raise TabularError(
                f"{path}: row {row}, column {column!r}: not one of the levels {allowed}"
            )
        out.extend(1.0 if values[column] == v else 0.0 for v in levels[1:])
    return out


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


def read_features_only(
    path: Path, task: TabularTask, columns: Sequence[str]
) -> NDArray[np.float64]:
    """A features-only file (a tier-3 site's ``reference.csv`` or ``score.csv``) as the model's
    inputs ``columns``: the recipe without its targets.

    Dropped columns and the targets are ignored when present and not required. Unlike a training
    file, a row cannot be scored without all its features: a missing or non-finite value is an
    error, not a dropped row, as is a level the recipe does not list. Blank lines and a UTF-8
    byte-order mark are ignored, as the contract's reader ignores them. Errors name the file (not
    its folder), row and column, never a cell.
    """
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        raise TabularError(f"{path.name}: empty file")
    header = [h.strip() for h in rows[0]]
    absent = [c for c in task.categorical if c not in header]
    if absent or task.feature_columns(header) != list(columns):
        raise TabularError(
            f"{path.name}: the columns do not give the model's {len(columns)} features "
            f"{', '.join(columns)} in that order"
        )
    ignored = {*task.drop, *task.targets}
    missing = {"", *task.missing}
    table = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TabularError(
                f"{path.name}: row {i} has {len(row)} cells, the header {len(header)}"
            )
        values: dict[str, float] = {}
        for column, raw in zip(header, row, strict=True):
            if column in ignored:
                continue
            cell = raw.strip()
            try:
                values[column] = math.nan if cell in missing else float(cell)
            except ValueError:
                raise TabularError(
                    f"{path.name}: row {i}, column {column!r}: not a number"
                ) from None
            if not math.isfinite(values[column]):
                raise TabularError(
                    f"{path.name}: row {i}, column {column!r}: missing or infinite value; every "
                    "feature of a row to score must be a number"
                )
        table.append(_features(Path(path.name), i, task, header, values))
    return np.asarray(table, dtype=np.float64).reshape(len(table), len(columns))


def load_tabular_site(
    folder: Path, task: TabularTask, device: torch.device | str = "cpu", name: str | None = None
) -> SiteData:
    """A site's ``train.csv`` and ``val.csv`` as tensors, standardised with the training rows'
    statistics when the task says so (a constant column maps to 0)."""
    train, val = (read_tabular(folder / f, task) for f in SPLITS)
    site = name or folder.name
    if len(train.y) < 2:
        raise TabularError(f"{folder / SPLITS[0]}: {site} has {len(train.y)} usable rows")
    if train.columns != val.columns:
        raise TabularError(f"{folder}: train.csv and val.csv have different columns")
    scale = Standardiser.fit(train.x) if task.standardise else None

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
    )
