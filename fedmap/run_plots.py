"""Pictures of one federation run, for the people who would rather look than read.

- :func:`plot_site_gain`: each site's gain of FedMAP over its baseline (a local-only model for
  tiers 1-2, the majority-class rate for tier 3), bars coloured by tier.

Matplotlib loads inside the functions only (Agg backend), so importing this module stays cheap.
"""

from __future__ import annotations

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
