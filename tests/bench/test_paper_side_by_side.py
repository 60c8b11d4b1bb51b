"""``bench/paper_side_by_side.py``: how the columns that are not the code's are reported."""

from __future__ import annotations

from collections.abc import Callable

from bench.paper_readings import FEDBN_BATCHNORM, FEDMAP_OMEGA, PaperResults, protocol_2cb8dee
from bench.paper_side_by_side import counted_not_code, side_by_side
from fedmap.protocols import PAPER, PAPER_TABLES

PAPER_LS = PAPER_TABLES["label-skew"]


def test_columns_that_are_not_the_code_are_shown_but_not_counted(
    label_skew_results: Callable[[dict[str, float]], PaperResults],
) -> None:
    paper = label_skew_results(
        {"fedbn": PAPER_LS["fedbn"] - 6.0, FEDBN_BATCHNORM: PAPER_LS["fedbn"] - 1.0}
    )
    table, met, total = side_by_side(paper, [])
    assert (met, total) == (0, 1)
    assert (
        f"| label-skew | {FEDBN_BATCHNORM} | 63.05 | 62.05 ± 0.00 | -1.00 | yes (not the code's model) |"
        in table
    )


def test_counted_columns_the_code_never_ran_are_named(
    label_skew_results: Callable[[dict[str, float]], PaperResults],
) -> None:
    columns = [*PAPER.columns, *protocol_2cb8dee().columns]
    paper = label_skew_results(dict.fromkeys(columns, 70.0))
    committed = counted_not_code(paper, PAPER)
    assert committed == (
        f"; counted, though the code never ran them: `{FEDMAP_OMEGA}` "
        "(the code weights by sample counts)"
    )
    early = counted_not_code(paper, protocol_2cb8dee())
    assert "`fedmap-samples @2cb8dee` (2cb8dee's FedMAP loss raises a TypeError)" in early
    assert "`individual @2cb8dee` (2cb8dee has no Individual runner)" in early
    assert "fedavg" not in early


def test_a_column_that_was_not_run_is_not_named_as_counted(
    label_skew_results: Callable[[dict[str, float]], PaperResults],
) -> None:
    paper = label_skew_results({"fedmap-samples": 80.0, "individual": 75.0})
    assert counted_not_code(paper, PAPER) == ""
    _, met, total = side_by_side(paper, [])
    assert (met, total) == (2, 2)
