"""``bench/paper_closest.py``: which of the paper's figures some reading of the authors' code
reaches, and how many a reading the code ran reaches."""

from __future__ import annotations

from collections.abc import Callable

from bench.paper_closest import closest_readings, reports_by_column
from bench.paper_readings import FEDBN_BATCHNORM, MATCHED, PaperResults, at_2cb8dee
from fedmap.protocols import PAPER_TABLES

PAPER_LS = PAPER_TABLES["label-skew"]
Results = Callable[[dict[str, float]], PaperResults]


def test_every_recorded_column_sits_beside_its_papers_method() -> None:
    reports = reports_by_column()
    assert reports["fedmap-omega"] == "fedmap"
    assert reports[MATCHED] == "individual"
    assert reports[FEDBN_BATCHNORM] == "fedbn"
    assert reports[at_2cb8dee("fedprox")] == "fedprox"
    assert "fedmap-samples (noise 2)" not in reports  # an ablation, not a reading


def test_each_figure_takes_its_closest_reading_and_misses_are_named(
    label_skew_results: Results,
) -> None:
    paper = label_skew_results(
        {
            "fedmap-samples": PAPER_LS["fedmap"] - 6.0,
            at_2cb8dee("fedmap-samples"): PAPER_LS["fedmap"] - 2.0,  # closest, within
            "individual": PAPER_LS["individual"] - 20.0,
            MATCHED: PAPER_LS["individual"] + 1.0,  # not the code's budget, still a reading
            "fedavg": PAPER_LS["fedavg"] + 3.5,  # missed by every reading
            at_2cb8dee("fedavg"): PAPER_LS["fedavg"] + 8.0,
            "fedprox": PAPER_LS["fedprox"] + 0.5,  # the code's own reading, within
        }
    )
    closest = closest_readings(paper)
    table = closest.text
    assert (closest.met, closest.met_code, closest.total) == (3, 1, 4)
    assert (
        "| label-skew | fedmap | 80.39 | `fedmap-samples @2cb8dee` | 78.39 | -2.00 | yes | "
        "`fedmap-samples` -6.00 **no** |" in table
    )
    assert "| label-skew | individual | 75.20 | `individual-matched` |" in table
    assert "No reading reaches label-skew fedavg (nearest +3.50, `fedavg`)." in table
    assert "3 of the paper's 4 figures lie within 3 pp" in table
    assert (
        "2 readings of those compared are not what the authors' code ran "
        "(`individual-matched`: not the code's budget; "
        "`fedmap-samples @2cb8dee`: 2cb8dee's FedMAP loss raises a TypeError)" in table
    )
    assert "Counting only readings the code ran, 1 of 4 lies within 3 pp." in table


def test_one_figure_reads_in_the_singular(label_skew_results: Results) -> None:
    closest = closest_readings(label_skew_results({"fedavg": PAPER_LS["fedavg"] + 1.0}))
    assert "the paper's one figure lies within 3 pp" in closest.text
    assert "every reading compared is one the authors' code ran" in closest.text


def test_a_figure_with_no_reading_the_code_ran_counts_as_missed(
    label_skew_results: Results,
) -> None:
    closest = closest_readings(label_skew_results({MATCHED: PAPER_LS["individual"] + 1.0}))
    assert (closest.met, closest.met_code, closest.total) == (1, 0, 1)
    assert "| yes | - |" in closest.text
    assert (
        "0 of 1 lie within 3 pp (1 figure with no such reading, shown as -, count as missed)"
        in (closest.text)
    )


def test_no_figure_no_claim(label_skew_results: Results) -> None:
    closest = closest_readings(label_skew_results({"fedmap-samples (noise 2)": 80.0}))
    assert (closest.met, closest.total) == (0, 0)
    assert "No figure of the paper has a reading." in closest.text
