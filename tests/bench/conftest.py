"""Shared fixtures of the paper benchmark's tests."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from bench.paper_readings import PaperResults
from fedmap.experiment import SiteRecord


def _label_skew_results(scores: dict[str, float]) -> PaperResults:
    """One label-skew seed, one site per column, each scoring the given balanced accuracy (%)."""
    records = [
        SiteRecord(
            "label-skew", c, 0, "site-01", {"balanced_accuracy": v / 100, "accuracy": v / 100}
        )
        for c, v in scores.items()
    ]
    return PaperResults(records, {}, [], [0], 2.0, 1.0, {}, math.nan)


@pytest.fixture
def label_skew_results() -> Callable[[dict[str, float]], PaperResults]:
    """Paper-protocol results from one label-skew site's balanced accuracy per column."""
    return _label_skew_results
