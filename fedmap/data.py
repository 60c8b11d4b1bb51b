"""A site's own data: its train/validation split on disk and in tensors.

Every site reads only its own folder, ``<root>/<site>/train.csv`` and ``val.csv``: a header row of
feature names followed by ``label`` (0 or 1). Standardisation statistics are fit on the site's
training split only and never leave the site.

A site's tensors serve one of two tasks: ``binary`` (a 0/1 label per row) or ``survival`` (a
follow-up time and an event indicator per row, 1 = event observed, 0 = censored).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from fedmap.schema import TASKS as TASKS
from fedmap.schema import Task as Task

LABEL = "label"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SiteSplit:
    """Raw rows of one site, as the site stores them."""

    name: str
    x_train: NDArray[np.float64]
    y_train: NDArray[np.int64]
    x_val: NDArray[np.float64]
    y_val: NDArray[np.int64]

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])


@dataclass(frozen=True)
class SiteData:
    """Standardised tensors of one site, ready for local training and scoring.

    binary: ``y`` has shape (N,), 0/1 floats; survival: shape (N, 2), the columns (time, event).
    Either way the model outputs one value per row: a logit, or the log relative risk.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    task: Task = "binary"
    dropped: tuple[int, int] = (0, 0)
    """Rows of (train.csv, val.csv) left out for a missing value (``fedmap.tabular``)."""
    imputed: tuple[int, int] = (0, 0)
    """Rows of (train.csv, val.csv) kept with at least one input imputed."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        expected = "(N,)" if self.task == "binary" else "(N, 2) of (time, event)"
        for split, y in (("train", self.y_train), ("val", self.y_val)):
            ok = y.ndim == 1 if self.task == "binary" else (y.ndim == 2 and y.shape[1] == 2)
            if not ok:
                raise ValueError(
                    f"{self.name}: {self.task} y_{split} must have shape {expected}, "
                    f"got {tuple(y.shape)}"
                )

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_scored(self) -> int:
        """Validation rows scored: every row of val.csv but those dropped for a missing value."""
        return int(self.y_val.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def feature_names(n_features: int) -> list[str]:
    return [f"x{j:02d}" for j in range(n_features)]


@dataclass(frozen=True)
class Standardiser:
    """z = (x - mean) / std with statistics fit on one site's own reference rows."""

    mean: NDArray[np.float64]
    std: NDArray[np.float64]

    @staticmethod
    def fit(x: NDArray[np.float64]) -> Standardiser:
        """mean and std per column; a constant column gets a unit scale (it maps to 0, not NaN)."""
        std = x.std(axis=0)
        return Standardiser(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray((x - self.mean) / self.std, dtype=np.float64)


def standardise(split: SiteSplit, device: torch.device | str = "cpu") -> SiteData:
    """z = (x - mean_train) / std_train, with the statistics of the site's training rows only."""
    scale = Standardiser.fit(split.x_train)

    def tensor(x: NDArray[np.float64]) -> Tensor:
        return torch.as_tensor(scale(x), dtype=torch.float32, device=device)

    def labels(y: NDArray[np.int64]) -> Tensor:
        return torch.as_tensor(y, dtype=torch.float32, device=device)

    return SiteData(
        split.name,
        tensor(split.x_train),
        labels(split.y_train),
        tensor(split.x_val),
        labels(split.y_val),
    )


def _write_csv(path: Path, x: NDArray[np.float64], y: NDArray[np.int64]) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    header = ",".join([*feature_names(x.shape[1]), LABEL])
    tmp = path.with_suffix(".csv.tmp")
    table = np.column_stack([x, y])
    fmt = ["%.10g"] * x.shape[1] + ["%d"]
    np.savetxt(tmp, table, delimiter=",", header=header, comments="", fmt=fmt)
    os.replace(tmp, path)


def write_site(split: SiteSplit, root: Path) -> Path:
    """Write ``root/<site>/train.csv`` and ``val.csv``; returns the site folder."""
    folder = root / split.name
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "train.csv", split.x_train, split.y_train)
    _write_csv(folder / "val.csv", split.x_val, split.y_val)
    return folder


def _read_csv(path: Path) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Parse with the csv module (quoted cells are unquoted, as pandas does when validating).

    Errors name the file, row and column but never quote a cell: a cell is patient data.
    """
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0]:
        raise ValueError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    if header[-1] != LABEL:
        raise ValueError(f"{path}: last column must be {LABEL!r}, found {header[-1]!r}")
    table = np.empty((len(rows) - 1, len(header)))
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {i} has {len(row)} cells, the header {len(header)}")
        for j, cell in enumerate(row):
            try:
                table[i - 2, j] = float(cell)
            except ValueError:
                raise ValueError(f"{path}: row {i}, column {header[j]!r}: not a number") from None
    y = table[:, -1]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{path}: column {LABEL!r} must hold only 0 and 1")
    return table[:, :-1], y.astype(np.int64)


def write_features(path: Path, x: NDArray[np.float64]) -> None:
    """Write a features-only file through a temporary file and rename."""
    tmp = path.with_suffix(".csv.tmp")
    header = ",".join(feature_names(x.shape[1]))
    np.savetxt(tmp, x, delimiter=",", header=header, comments="", fmt="%.10g")
    os.replace(tmp, path)


def read_site(folder: Path) -> SiteSplit:
    """Read one site's folder; the folder name is the site name."""
    x_train, y_train = _read_csv(folder / "train.csv")
    x_val, y_val = _read_csv(folder / "val.csv")
    return SiteSplit(folder.name, x_train, y_train, x_val, y_val)


def read_federation(root: Path) -> list[SiteSplit]:
    """Every site folder under root, in name order."""
    folders = sorted(p for p in root.iterdir() if (p / "train.csv").is_file())
    if not folders:
        raise FileNotFoundError(f"{root}: no site folders with a train.csv")
    return [read_site(p) for p in folders]
