"""``bench/paper_bound.py``: which columns a reading trains alike, and the most cells any run of
the reading can put within 3 pp of the paper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from bench.paper_bound import (
    bound_section,
    chance_text,
    most_within,
    one_sided_chance,
    reading_bound,
    trained_alike,
)
from bench.paper_readings import FEDMAP, FEDMAP_OMEGA, MATCHED, PaperResults, bench_protocol
from bench.paper_report import paper_counts
from fedmap.experiment import SiteRecord
from fedmap.protocols import PAPER, PAPER_2CB8DEE, PAPER_TABLES

Results = Callable[[dict[str, float]], PaperResults]
PAPER_LS = PAPER_TABLES["label-skew"]


def test_the_code_trains_fedbn_as_fedavg_and_at_2cb8dee_fedprox_too() -> None:
    assert trained_alike(PAPER) == [["fedavg", "fedbn"]]
    assert trained_alike(PAPER_2CB8DEE) == [["fedavg", "fedprox", "fedbn"]]
    # the column added beside the code: BatchNorm kept local is another method, not alike
    assert trained_alike(bench_protocol()) == [["fedavg", "fedbn"]]


def test_an_option_or_a_budget_apart_is_not_alike() -> None:
    fedavg = PAPER.columns["fedavg"]
    columns = {
        "fedavg": fedavg,
        "longer": replace(fedavg, rounds=fedavg.rounds + 1),
        "slower": replace(fedavg, training=replace(fedavg.training, lr=1e-5)),
        "fedmap": PAPER.columns[FEDMAP],
        "omega": PAPER.columns[FEDMAP_OMEGA],  # the weighting option differs
    }
    assert trained_alike(replace(PAPER, columns=columns)) == []


@pytest.mark.parametrize(
    ("figures", "most"),
    [
        ([], 0),
        ([52.92], 1),
        ([52.92, 63.05], 1),  # 10.13 apart: no x is within 3 of both
        ([52.92, 53.71, 63.05], 2),
        ([1.0, 7.0], 2),  # exactly 6 apart: x = 4 is within 3 of both
        ([1.0, 7.01], 1),
        ([63.10, 63.00, 65.38], 3),
    ],
)
def test_most_within(figures: list[float], most: int) -> None:
    assert most_within(figures, 3.0) == most


def test_the_chance_of_a_normal_tail() -> None:
    assert one_sided_chance(0.0) == pytest.approx(0.5)
    assert one_sided_chance(1.96) == pytest.approx(0.025, abs=1e-4)
    assert chance_text(0.0123) == "1.2%"
    assert chance_text(5.6e-12) == "6e-12"


def test_label_skew_loses_one_cell_whatever_the_scores(label_skew_results: Results) -> None:
    # even scores that put FedAvg on the paper's figure leave FedBN, trained alike, 10 pp off
    columns = (FEDMAP, FEDMAP_OMEGA, "individual", "fedavg", "fedprox", "fedbn", MATCHED)
    paper = label_skew_results({c: PAPER_LS["fedavg"] for c in columns})
    bound = reading_bound(paper, bench_protocol())
    assert (bound.reachable, bound.cells) == (5, 6)  # MATCHED is not one of the code's cells
    (spread,) = bound.spreads
    assert spread.columns == ("fedavg", "fedbn")
    assert spread.spread == pytest.approx(PAPER_LS["fedbn"] - PAPER_LS["fedavg"])
    assert paper_counts(paper)["paper_cells_reachable"] == 5
    section = bound_section([bound], seeds=1)
    assert "| paper | label-skew | `fedavg`, `fedbn` | 52.92, 63.05 | 10.13 | 1 of 2 |" in section
    assert "paper: at most 5 of 6 cells" in section


def test_no_spread_leaves_every_cell_reachable() -> None:
    # on feature skew the paper's FedAvg and FedBN lie 2.28 pp apart: one figure meets both
    records = [
        SiteRecord("feature-skew", c, s, "site-01", {"balanced_accuracy": 0.6, "accuracy": 0.6})
        for c in ("fedavg", "fedbn")
        for s in (0, 1)
    ]
    paper = PaperResults(records, {}, [], [0, 1], 2.0, 1.0, {})
    bound = reading_bound(paper, bench_protocol())
    assert (bound.reachable, bound.cells, bound.spreads) == (2, 2, ())
    assert bound_section([bound], seeds=2).startswith("Every reading's alike columns")


def test_the_chance_sentence_uses_the_seeds_spread() -> None:
    records = [
        SiteRecord("label-skew", c, s, "site-01", {"balanced_accuracy": v, "accuracy": v})
        for c in ("fedavg", "fedbn")
        for s, v in ((0, 0.54), (1, 0.58))  # std 2.83 pp over two seeds
    ]
    paper = PaperResults(records, {}, [], [0, 1], 2.0, 1.0, {})
    section = bound_section([reading_bound(paper, bench_protocol())], seeds=2)
    # 4.13 pp apart on a difference sd of 2.83 * sqrt(2 / 2): z = 1.46
    assert "4.13 pp apart, z = 1.46" in section
