"""Pictures of one federation run, for the people who would rather look than read.

- :func:`plot_site_gain`: each site's gain of FedMAP over its baseline (a local-only model for
  tiers 1-2, the majority-class rate for tier 3), bars coloured by tier.
- :func:`plot_rounds_sites`: rounds x sites, the aggregation weight w_k and the validation metric
  of every site in every round, with the rounds it was rejected or sent nothing marked.

Matplotlib loads inside the functions only (Agg backend), so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TIER_COLOURS = {1: "#1f77b4", 2: "#2ca02c", 3: "#ff7f0e"}
TIER_LABELS = {
    1: "tier 1: trains every round (vs local-only)",
    2: "tier 2: fine-tunes the prior (vs local-only)",
    3: "tier 3: inference only (vs majority class)",
}


@dataclass(frozen=True)
class SiteGain:
    """One site's score with FedMAP and with its baseline (both fractions in [0, 1])."""

    name: str
    tier: int
    baseline: float
    fedmap: float

    @property
    def gain_pp(self) -> float:
        """gain = 100 (fedmap - baseline), in percentage points."""
        return 100.0 * (self.fedmap - self.baseline)


def plot_site_gain(sites: Sequence[SiteGain], path: Path, title: str) -> Path:
    """A bar per site of its gain in percentage points over its baseline, coloured by tier, with
    a zero line; each bar is labelled with its gain. Writes a PNG at path and returns path."""
    if not sites:
        raise ValueError("no sites to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(sites) + 2.0), 4.2))
    gains = [s.gain_pp for s in sites]
    bars = ax.bar(
        [s.name for s in sites], gains, color=[TIER_COLOURS.get(s.tier, "grey") for s in sites]
    )
    for bar, gain in zip(bars, gains, strict=True):
        ax.annotate(
            f"{gain:+.1f}",
            (bar.get_x() + bar.get_width() / 2, gain),
            xytext=(0, 3 if gain >= 0 else -10),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel("gain of FedMAP (percentage points)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    tiers = sorted({s.tier for s in sites})
    ax.legend(
        handles=[
            Patch(color=TIER_COLOURS.get(t, "grey"), label=TIER_LABELS.get(t, str(t)))
            for t in tiers
        ],
        fontsize=7,
        loc="best",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class RoundSite:
    """One site in one round, as the round's summary records it."""

    round: int
    site: str
    weight: float | None = None
    """w_k, its share of the round's prior; None when its update did not count."""
    metric: float | None = None
    """The validation metric it reported with its update that round, if it did."""
    failure: str = ""
    """Why it did not count: ``rejected: <reason>`` or ``missing`` (no update); "" if accepted."""


@dataclass(frozen=True)
class RoundsSitesGrid:
    """The cells laid out: a row per site (in order of first appearance), a column per round
    (ascending); NaN where a site has no weight or metric; a failure's kind or "" per cell."""

    sites: tuple[str, ...]
    rounds: tuple[int, ...]
    weights: tuple[tuple[float, ...], ...]
    metrics: tuple[tuple[float, ...], ...]
    failures: tuple[tuple[str, ...], ...]
    """``rejected``, ``missing`` or "" (accepted, or no cell) for each site and round."""


def rounds_sites_grid(cells: Sequence[RoundSite]) -> RoundsSitesGrid:
    """Lay the cells out as sites x rounds; a second cell for the same site and round is an
    error (a summary names a site once)."""
    sites = tuple(dict.fromkeys(c.site for c in cells))
    rounds = tuple(sorted({c.round for c in cells}))
    row, col = {s: i for i, s in enumerate(sites)}, {t: j for j, t in enumerate(rounds)}
    weights = [[math.nan] * len(rounds) for _ in sites]
    metrics = [[math.nan] * len(rounds) for _ in sites]
    failures = [[""] * len(rounds) for _ in sites]
    seen: set[tuple[str, int]] = set()
    for c in cells:
        if (c.site, c.round) in seen:
            raise ValueError(f"{c.site} appears twice in round {c.round}")
        seen.add((c.site, c.round))
        i, j = row[c.site], col[c.round]
        weights[i][j] = math.nan if c.weight is None else float(c.weight)
        metrics[i][j] = math.nan if c.metric is None else float(c.metric)
        failures[i][j] = c.failure.split(":", 1)[0].strip()
    return RoundsSitesGrid(
        sites,
        rounds,
        tuple(map(tuple, weights)),
        tuple(map(tuple, metrics)),
        tuple(map(tuple, failures)),
    )


def plot_rounds_sites(
    cells: Sequence[RoundSite], path: Path, title: str, metric: str = "accuracy"
) -> Path:
    """Two heat maps over rounds (x) and sites (y): the weight w_k of every accepted update
    (w_k = softmax(log omega)_k under FedMAP's weighting, eq. 9; blank where it did not count)
    and the validation ``metric`` the site reported; a red cross marks a rejected update and a
    grey dash a round the site sent nothing. Writes a PNG at path and returns path."""
    if not cells:
        raise ValueError("no rounds to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    grid = rounds_sites_grid(cells)
    n_sites, n_rounds = len(grid.sites), len(grid.rounds)
    width = max(4.0, 0.32 * n_rounds + 2.2)
    fig, axes = plt.subplots(
        1, 2, figsize=(2 * width, max(2.6, 0.3 * n_sites + 1.6)), sharey=True, squeeze=False
    )
    weights = np.ma.masked_invalid(np.array(grid.weights, dtype=float))
    scores = np.ma.masked_invalid(np.array(grid.metrics, dtype=float))
    top = float(weights.max()) if weights.count() else 1.0
    low, high = (float(scores.min()), float(scores.max())) if scores.count() else (0.0, 1.0)
    panels = (
        (axes[0][0], weights, "Blues", 0.0, max(top, 1e-9), "weight $w_k$"),
        (
            axes[0][1],
            scores,
            "viridis",
            low,
            high if high > low else low + 1e-9,
            f"validation {metric}",
        ),
    )
    for ax, values, name, vmin, vmax, label in panels:
        cmap = plt.get_cmap(name).with_extremes(bad="#c8c8c8")
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.02)
        for kind, marker, colour in (("rejected", "x", "#d62728"), ("missing", "_", "#555555")):
            at = [
                (j, i)
                for i, row in enumerate(grid.failures)
                for j, failure in enumerate(row)
                if failure == kind
            ]
            if at:
                xs, ys = zip(*at, strict=True)
                ax.scatter(xs, ys, marker=marker, c=colour, s=40, linewidths=1.6)
        step = max(1, n_rounds // 20)
        ax.set_xticks(range(0, n_rounds, step), [str(t) for t in grid.rounds[::step]], fontsize=7)
        ax.set_yticks(range(n_sites), list(grid.sites), fontsize=7)
        ax.set_xlabel("round")
        ax.set_title(label, fontsize=9)
    handles = [
        Line2D([], [], ls="", marker="x", color="#d62728", label="update rejected"),
        Line2D([], [], ls="", marker="_", color="#555555", label="no update (missing)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
