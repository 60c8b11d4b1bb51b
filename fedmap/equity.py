"""The equity report: who gains from a federation, and who is left behind.

Given each site's score under each method (mean over seeds) and a baseline method (a model trained
on the site's data alone), it gives, per method:

- gain_k = s_k(method) - s_k(baseline), each site's gain over its local model;
- the worst-served site, argmin_k s_k(baseline), and its gain (the v2 paper reports gains of up to
  14.3% for the worst-served regions);
- for a metric where lower is better (``fedmap.metrics.LOWER_IS_BETTER``: Brier score, ECE), the
  direction flips so that a positive gain is still an improvement: gain_k = s_k(baseline) -
  s_k(method), and the worst-served site is argmax_k s_k(baseline);
- the smallest gain, min_k gain_k (negative: some site would do better alone);
- the spread of the score across sites: its standard deviation and max_k s_k - min_k s_k.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Equity:
    method: str
    scores: Mapping[str, float]
    gains: Mapping[str, float]
    """gain_k = s_k(method) - s_k(baseline) (reversed when lower is better: positive is an
    improvement); empty for the baseline itself."""
    worst_served: str
    """argmin_k s_k(baseline) (argmax when lower is better): the site its own data serves
    worst."""
    worst_served_gain: float
    min_gain: float
    spread_std: float
    spread_range: float
    lower_is_better: bool = False
    """Whether the metric's smaller score is the better model (the gains are then reversed)."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores.values())


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def spread(scores: Mapping[str, float]) -> tuple[float, float]:
    """(sample std, max - min) of the sites' scores, NaN scores left out."""
    values = _finite(list(scores.values()))
    if not values:
        return math.nan, math.nan
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return std, max(values) - min(values)


def equity(
    scores: Mapping[str, Mapping[str, float]], baseline: str, lower_is_better: bool = False
) -> tuple[Equity, ...]:
    """One :class:`Equity` per method of ``scores`` (method -> site -> score); lower_is_better
    for a metric such as the Brier score, where the smaller score is the better model."""
    if baseline not in scores:
        raise ValueError(f"the baseline {baseline!r} is not among the methods {', '.join(scores)}")
    base = scores[baseline]
    sign = -1.0 if lower_is_better else 1.0
    worst = min(base, key=lambda site: (math.isnan(base[site]), sign * base[site]))
    out = []
    for method, per_site in scores.items():
        missing = sorted(set(base) - set(per_site))
        if missing:
            raise ValueError(f"{method}: no score for site(s) {', '.join(missing)}")
        gains = {} if method == baseline else {k: sign * (per_site[k] - base[k]) for k in base}
        finite = _finite(list(gains.values()))
        std, rng = spread(per_site)
        out.append(
            Equity(
                method,
                dict(per_site),
                gains,
                worst,
                gains.get(worst, 0.0),
                min(finite) if finite else 0.0,
                std,
                rng,
                lower_is_better,
            )
        )
    return tuple(out)


def equity_markdown(rows: Sequence[Equity], label: str, scale: float = 100.0) -> str:
    """Two tables: per-site gains, then the summary (worst-served gain, smallest gain, spread).

    Values are multiplied by scale (100: accuracy in percentage points, 2 decimals; otherwise 3).
    A positive gain is an improvement, whichever the metric's direction."""
    if not rows:
        return ""
    d = 2 if scale == 100.0 else 3
    sites = list(rows[0].scores)
    unit = " (pp)" if scale == 100.0 else ""
    gains = [r for r in rows if r.gains]
    direction = " (lower is better: a decrease counts as a gain)" if rows[0].lower_is_better else ""
    lines = [
        f"Gain of each site over its local model, {label}{unit}{direction}:",
        "",
        "| method | " + " | ".join(sites) + " |",
        "|---|" + "---|" * len(sites),
    ]
    for r in gains:
        cells = " | ".join(f"{scale * r.gains[s]:+.{d}f}" for s in sites)
        lines.append(f"| {r.method} | {cells} |")
    worst = rows[0].worst_served
    extreme = "highest" if rows[0].lower_is_better else "lowest"
    lines += [
        "",
        f"Worst-served site ({extreme} local {label}): **{worst}**.",
        "",
        f"| method | mean {label} | gain at {worst} | smallest gain | spread: std across sites | "
        "spread: max - min |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = f"{scale * r.worst_served_gain:+.{d}f}" if r.gains else "-"
        smallest = f"{scale * r.min_gain:+.{d}f}" if r.gains else "-"
        lines.append(
            f"| {r.method} | {scale * r.mean:.{d}f} | {gain} | {smallest} | "
            f"{scale * r.spread_std:.{d}f} | {scale * r.spread_range:.{d}f} |"
        )
    return "\n".join(lines) + "\n"
