"""``bench/paper_report.py``: which of the paper's figures some reading of the authors' code
reaches, and how the columns that are not the code's are reported."""

from __future__ import annotations

import math

from bench.paper_readings import FEDBN_BATCHNORM, MATCHED, PaperResults, at_2cb8dee
from bench.paper_report import closest_readings, reports_of, side_by_side
from fedmap.experiment import SiteRecord
from fedmap.protocols import PAPER_TABLES

PAPER_LS = PAPER_TABLES["label-skew"]


def results(scores: dict[str, float]) -> PaperResults:
    """One label-skew seed, one site per column, each scoring the given balanced accuracy (%)."""
    records = [
        SiteRecord(
            "label-skew", c, 0, "site-01", {"balanced_accuracy": v / 100, "accuracy": v / 100}
        )
        for c, v in scores.items()
    ]
    return PaperResults(records, {}, [], [0], 2.0, 1.0, {}, math.nan)


def test_every_recorded_column_sits_beside_its_papers_method() -> None:
    assert reports_of("fedmap-omega") == "fedmap"
    assert reports_of(MATCHED) == "individual"
    assert reports_of(FEDBN_BATCHNORM) == "fedbn"
    assert reports_of(at_2cb8dee("fedprox")) == "fedprox"
    assert reports_of("fedmap-samples (noise 2)") is None  # an ablation, not a reading


def test_each_figure_takes_its_closest_reading_and_misses_are_named() -> None:
    paper = results(
        {
            "fedmap-samples": PAPER_LS["fedmap"] - 6.0,
            at_2cb8dee("fedmap-samples"): PAPER_LS["fedmap"] - 2.0,  # closest, within
            "individual": PAPER_LS["individual"] - 20.0,
            MATCHED: PAPER_LS["individual"] + 1.0,  # not the code's budget, still a reading
            "fedavg": PAPER_LS["fedavg"] + 3.5,  # missed by every reading
            at_2cb8dee("fedavg"): PAPER_LS["fedavg"] + 8.0,
        }
    )
    table, met, total = closest_readings(paper)
    assert (met, total) == (2, 3)
    assert (
        "| label-skew | fedmap | 80.39 | `fedmap-samples @2cb8dee` | 78.39 | -2.00 | yes |" in table
    )
    assert "| label-skew | individual | 75.20 | `individual-matched` |" in table
    assert "No reading reaches label-skew fedavg (nearest +3.50, `fedavg`)." in table
    assert "2 of 3 of the paper's figures" in table


def test_columns_that_are_not_the_code_are_shown_but_not_counted() -> None:
    paper = results({"fedbn": PAPER_LS["fedbn"] - 6.0, FEDBN_BATCHNORM: PAPER_LS["fedbn"] - 1.0})
    table, met, total = side_by_side(paper, [])
    assert (met, total) == (0, 1)
    assert (
        f"| label-skew | {FEDBN_BATCHNORM} | 63.05 | 62.05 ± 0.00 | -1.00 | yes (not the code's model) |"
        in table
    )
