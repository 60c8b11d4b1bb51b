"""Shared fixtures: one torch thread (runs repeat exactly and do not fight the benchmark for
cores), a fixed global seed per test, and tiny in-memory sites for training tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

if TYPE_CHECKING:
    from fedmap.algorithms import SiteContext
    from fedmap.data import SiteData
    from fedmap.training import LocalTraining


torch.set_num_threads(1)
# Matplotlib caches fonts under ~/.config unless told otherwise; keep the home directory clean.
os.environ.setdefault(
    "MPLCONFIGDIR", str(Path(__file__).resolve().parents[1] / ".state" / "matplotlib")
)


@pytest.fixture(autouse=True)
def _fixed_seed() -> Iterator[None]:
    """Every test starts from the same torch global state and leaves no trace of its own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def separable_site(name: str = "site-01", n: int = 128, d: int = 4, seed: int = 0) -> SiteData:
    """Two Gaussian blobs at +-2 along a random direction: linearly separable with high margin."""
    from fedmap.data import SiteData

    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)

    def rows(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = np.arange(m) % 2
        x = rng.standard_normal((m, d)) * 0.5 + np.outer(2.0 * y - 1.0, 2.0 * direction)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    x_train, y_train = rows(n)
    x_val, y_val = rows(n // 2)
    return SiteData(name, x_train, y_train, x_val, y_val)


@pytest.fixture
def make_site() -> Callable[..., SiteData]:
    return separable_site


@pytest.fixture
def make_context() -> Callable[..., SiteContext]:
    """A SiteContext around a SiteData, with a model builder and a seeded generator."""

    def make(
        data: SiteData,
        model: str = "mlp",
        training: LocalTraining | None = None,
        seed: int = 0,
    ) -> SiteContext:
        from fedmap.algorithms import SiteContext
        from fedmap.models import build_model
        from fedmap.training import LocalTraining

        return SiteContext(
            data,
            lambda: build_model(model, data.num_features),
            training or LocalTraining(epochs=1, batch_size=32, lr=1e-2),
            torch.Generator().manual_seed(seed),
        )

    return make
