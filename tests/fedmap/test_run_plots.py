"""The run's pictures: the rounds x sites grid holds each cell where it belongs, and both plots
write a PNG (Agg, no display)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedmap.run_plots import (
    RoundSite,
    SiteGain,
    plot_rounds_sites,
    plot_site_gain,
    rounds_sites_grid,
)

PNG = b"\x89PNG\r\n\x1a\n"
CELLS = [
    RoundSite(2, "site-02", 0.25, 0.70),
    RoundSite(1, "site-02", 0.4, 0.61),
    RoundSite(1, "site-01", 0.6, 0.80),
    RoundSite(2, "site-01", 0.75, 0.82),
    RoundSite(1, "site-03", failure="rejected: bad signature"),
    RoundSite(2, "site-03", failure="missing"),
]


def test_the_grid_puts_each_site_and_round_in_its_cell() -> None:
    grid = rounds_sites_grid(CELLS)
    assert grid.sites == ("site-02", "site-01", "site-03")  # order of first appearance
    assert grid.rounds == (1, 2)
    assert grid.weights[0] == (0.4, 0.25) and grid.weights[1] == (0.6, 0.75)
    assert grid.metrics[1] == (0.80, 0.82)
    assert all(math.isnan(v) for v in (*grid.weights[2], *grid.metrics[2]))
    assert grid.failures == (("", ""), ("", ""), ("rejected", "missing"))


def test_the_grid_refuses_a_site_twice_in_one_round() -> None:
    with pytest.raises(ValueError, match="site-01 appears twice in round 1"):
        rounds_sites_grid([RoundSite(1, "site-01", 1.0), RoundSite(1, "site-01", 0.5)])


def test_a_round_missing_for_a_site_is_blank_not_a_failure() -> None:
    grid = rounds_sites_grid([RoundSite(1, "a", 1.0), RoundSite(2, "b", 1.0)])
    assert math.isnan(grid.weights[0][1]) and grid.failures[0][1] == ""


def test_rounds_sites_and_site_gain_write_pngs(tmp_path: Path) -> None:
    out = plot_rounds_sites(CELLS, tmp_path / "a" / "rounds_sites.png", "run x", "accuracy")
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 5_000
    # without any weight or metric (a run under privacy): the failures alone are drawn
    bare = [RoundSite(t, s, failure="" if s != "c" else "missing") for t in (1, 2) for s in "abc"]
    assert plot_rounds_sites(bare, tmp_path / "bare.png", "bare").read_bytes().startswith(PNG)
    gains = [SiteGain("site-01", 1, 0.7, 0.8), SiteGain("site-06", 2, 0.9, 0.85)]
    assert plot_site_gain(gains, tmp_path / "gain.png", "gain").read_bytes().startswith(PNG)
    assert gains[0].gain_pp == pytest.approx(10.0) and gains[1].gain_pp == pytest.approx(-5.0)


def test_nothing_to_plot_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no rounds"):
        plot_rounds_sites([], tmp_path / "x.png", "empty")
