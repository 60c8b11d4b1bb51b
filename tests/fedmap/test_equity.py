"""The equity report on a hand-computed example: gains, the worst-served site, the smallest gain and
the spread across sites, then its markdown."""

from __future__ import annotations

import math

import pytest

from fedmap.equity import Equity, equity, equity_markdown, spread

SCORES = {
    "individual": {"a": 0.80, "b": 0.60, "c": 0.70},
    "fedavg": {"a": 0.75, "b": 0.70, "c": 0.70},
    "fedmap": {"a": 0.85, "b": 0.72, "c": 0.69},
}


def by_method(rows: tuple[Equity, ...]) -> dict[str, Equity]:
    return {r.method: r for r in rows}


def test_gains_worst_served_min_gain_and_spread() -> None:
    rows = by_method(equity(SCORES, "individual"))
    assert list(rows) == ["individual", "fedavg", "fedmap"]

    fedavg = rows["fedavg"]
    assert fedavg.gains == pytest.approx({"a": -0.05, "b": 0.10, "c": 0.0})
    assert fedavg.worst_served == "b"  # the lowest local score, 0.60
    assert fedavg.worst_served_gain == pytest.approx(0.10)
    assert fedavg.min_gain == pytest.approx(-0.05)
    # scores 0.75, 0.70, 0.70: mean 0.71667, sample variance 0.0016667 / 2
    assert fedavg.spread_std == pytest.approx(math.sqrt(0.05**2 * 2 / 3 / 2))
    assert fedavg.spread_std == pytest.approx(0.028867513)
    assert fedavg.spread_range == pytest.approx(0.05)
    assert fedavg.mean == pytest.approx(2.15 / 3)

    fedmap = rows["fedmap"]
    assert fedmap.gains == pytest.approx({"a": 0.05, "b": 0.12, "c": -0.01})
    assert fedmap.worst_served_gain == pytest.approx(0.12)
    assert fedmap.min_gain == pytest.approx(-0.01)
    assert fedmap.spread_range == pytest.approx(0.16)
    assert fedmap.spread_std == pytest.approx(0.085049005)

    local = rows["individual"]
    assert local.gains == {}
    assert (local.worst_served, local.worst_served_gain, local.min_gain) == ("b", 0.0, 0.0)
    assert local.spread_std == pytest.approx(0.1)
    assert local.spread_range == pytest.approx(0.2)
    assert local.scores == SCORES["individual"]


def test_another_baseline() -> None:
    rows = by_method(equity(SCORES, "fedavg"))
    assert rows["fedavg"].gains == {}
    assert rows["individual"].worst_served == "b"  # fedavg's lowest is 0.70 at b and c: b first
    assert rows["individual"].gains == pytest.approx({"a": 0.05, "b": -0.10, "c": 0.0})
    assert rows["individual"].min_gain == pytest.approx(-0.10)


BRIER = {
    "individual": {"a": 0.15, "b": 0.25, "c": 0.20},
    "fedmap": {"a": 0.12, "b": 0.18, "c": 0.21},
}


def test_a_lower_is_better_metric_reverses_the_gains() -> None:
    rows = by_method(equity(BRIER, "individual", lower_is_better=True))
    fedmap = rows["fedmap"]
    # gain_k = s_k(individual) - s_k(fedmap): a lower Brier score is a positive gain
    assert fedmap.gains == pytest.approx({"a": 0.03, "b": 0.07, "c": -0.01})
    assert fedmap.worst_served == "b"  # the highest local Brier score, 0.25
    assert fedmap.worst_served_gain == pytest.approx(0.07)
    assert fedmap.min_gain == pytest.approx(-0.01)
    assert fedmap.spread_range == pytest.approx(0.09)  # the spread does not depend on direction
    assert fedmap.lower_is_better
    # read as higher-is-better (the default), the same numbers say the opposite
    wrong = by_method(equity(BRIER, "individual"))["fedmap"]
    assert not wrong.lower_is_better
    assert wrong.worst_served == "a" and wrong.gains["b"] == pytest.approx(-0.07)
    text = equity_markdown(tuple(rows.values()), "brier", scale=1.0)
    assert text.startswith(
        "Gain of each site over its local model, brier (lower is better: a decrease counts as a "
        "gain):\n"
    )
    assert "Worst-served site (highest local brier): **b**." in text
    assert "| fedmap | +0.030 | +0.070 | -0.010 |" in text
    # scores 0.12, 0.18, 0.21: mean 0.17, sample std sqrt((0.05^2 + 0.01^2 + 0.04^2) / 2)
    assert fedmap.spread_std == pytest.approx(math.sqrt(0.0042 / 2))
    assert "| fedmap | 0.170 | +0.070 | -0.010 | 0.046 | 0.090 |" in text


def test_nan_scores_are_left_out() -> None:
    scores = {
        "individual": {"a": 0.8, "b": math.nan, "c": 0.6},
        "fedmap": {"a": 0.9, "b": 0.5, "c": 0.65},
    }
    rows = by_method(equity(scores, "individual"))
    assert rows["fedmap"].worst_served == "c"  # the NaN site is never the worst served
    assert rows["fedmap"].worst_served_gain == pytest.approx(0.05)
    assert math.isnan(rows["fedmap"].gains["b"])
    assert rows["fedmap"].min_gain == pytest.approx(0.05)
    assert rows["individual"].spread_range == pytest.approx(0.2)
    assert spread({"a": math.nan}) == pytest.approx((math.nan, math.nan), nan_ok=True)
    assert spread({"a": 0.3}) == (0.0, 0.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="the baseline 'individual' is not among the methods"):
        equity({"fedavg": {"a": 0.5}}, "individual")
    with pytest.raises(ValueError, match=r"fedmap: no score for site\(s\) b, c"):
        equity({"individual": {"a": 0.5, "b": 0.6, "c": 0.7}, "fedmap": {"a": 0.5}}, "individual")


def test_markdown_in_percentage_points() -> None:
    text = equity_markdown(equity(SCORES, "individual"), "accuracy")
    lines = text.splitlines()
    assert lines[0] == "Gain of each site over its local model, accuracy (pp):"
    assert "| method | a | b | c |" in lines
    assert "| fedavg | -5.00 | +10.00 | +0.00 |" in lines
    assert "| fedmap | +5.00 | +12.00 | -1.00 |" in lines
    assert not any(line.startswith("| individual | +") for line in lines)  # no gain row for it
    assert "Worst-served site (lowest local accuracy): **b**." in lines
    assert "| individual | 70.00 | - | - | 10.00 | 20.00 |" in lines
    assert "| fedavg | 71.67 | +10.00 | -5.00 | 2.89 | 5.00 |" in lines
    assert "| fedmap | 75.33 | +12.00 | -1.00 | 8.50 | 16.00 |" in lines
    assert text.endswith("|\n")


def test_markdown_on_the_metric_scale() -> None:
    text = equity_markdown(equity(SCORES, "individual"), "c-index", scale=1.0)
    assert "Gain of each site over its local model, c-index:" in text
    assert "(pp)" not in text
    assert "| fedmap | +0.050 | +0.120 | -0.010 |" in text
    assert "| fedmap | 0.753 | +0.120 | -0.010 | 0.085 | 0.160 |" in text
    assert equity_markdown((), "accuracy") == ""
