"""``bench/paper_report.py``: the counts ``bench/synthetic.py`` records."""

from __future__ import annotations

from collections.abc import Callable

from bench.paper_readings import MATCHED, PaperResults
from bench.paper_report import paper_counts
from fedmap.protocols import PAPER_TABLES

PAPER_LS = PAPER_TABLES["label-skew"]
Results = Callable[[dict[str, float]], PaperResults]


def test_counts_split_the_code_from_the_columns_added_to_it(label_skew_results: Results) -> None:
    paper = label_skew_results(
        {
            "individual": PAPER_LS["individual"] - 20.0,  # the code's budget, far off
            MATCHED: PAPER_LS["individual"] + 1.0,  # an added column: shown, not counted
            "fedavg": PAPER_LS["fedavg"] + 1.0,
        }
    )
    counts = paper_counts(paper)
    assert (counts["paper_cells_within_3pp"], counts["paper_cells"]) == (1, 2)
    assert (counts["paper_cells_within_3pp_2cb8dee"], counts["paper_cells_2cb8dee"]) == (0, 0)
    assert counts["paper_figures_within_3pp_of_some_reading"] == 2
    assert counts["paper_figures_within_3pp_of_a_reading_the_code_ran"] == 1
    assert counts["paper_figures"] == 2
