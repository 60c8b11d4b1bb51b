"""What no run of a reading can reach: columns the authors' code trains alike score one figure,
so where the paper gives them figures more than 2 x 3 pp apart, no setting puts all of them
within 3 pp.

``bench/paper_report.py`` sets the section on docs/results/synthetic.md and records the counts
(``paper_cells_reachable``) through ``paper_counts``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.paper_readings import PaperResults
from bench.paper_side_by_side import counted_cells
from fedmap.protocols import PAPER, REPRODUCE_WITHIN_PP, EvaluationProtocol, seed_summary


def trained_alike(protocol: EvaluationProtocol) -> list[list[str]]:
    """Groups of two or more columns with the same method, rounds, local training and options.

    Seeded alike, their records are equal (``tests/bench/test_paper_protocol.py`` checks it on
    a cut of both readings), so each group scores one figure per scenario.
    """
    groups: dict[str, list[str]] = {}
    for column, b in protocol.columns.items():
        key = repr((b.method, b.rounds, b.training, sorted(b.options.items())))
        groups.setdefault(key, []).append(column)
    return [g for g in groups.values() if len(g) > 1]


def most_within(figures: Sequence[float], within: float) -> int:
    """The most of the figures f_i that one value x can lie within ``within`` of:
    max_x #{i : |x - f_i| <= within}, the most f_i in any window [f_j, f_j + 2 within]."""
    return max(
        (sum(lo <= f <= lo + 2 * within + 1e-9 for f in figures) for lo in figures), default=0
    )


def one_sided_chance(z: float) -> float:
    """P(Z >= z) for a standard normal Z: erfc(z / sqrt 2) / 2."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chance_text(p: float) -> str:
    """'1.2%', or '3e-12' below one in a thousand."""
    return f"{p:.1%}" if p >= 1e-3 else f"{p:.0e}"


@dataclass(frozen=True)
class Spread:
    """One scenario's group of alike columns whose paper figures no single figure can meet."""

    scenario: str
    columns: tuple[str, ...]
    figures: tuple[float, ...]
    reachable: int
    seed_std: float
    """Std over seeds of the group's site-average (pp), for what unseeded redraws could do."""

    @property
    def spread(self) -> float:
        return max(self.figures) - min(self.figures)


@dataclass(frozen=True)
class Bound:
    """The most cells of a reading that any run of it can put within 3 pp, of its cells."""

    name: str
    reachable: int
    cells: int
    spreads: tuple[Spread, ...]


def reading_bound(paper: PaperResults, protocol: EvaluationProtocol) -> Bound:
    """``Bound`` of a reading over the recorded scenarios: each counted cell can be met, except
    that a group of ``trained_alike`` columns meets at most ``most_within`` of its figures."""
    summary = seed_summary(paper.records, PAPER.metric)
    cells = counted_cells(paper, protocol)
    groups = trained_alike(protocol)
    reachable = len(cells)
    spreads: list[Spread] = []
    for sc in dict.fromkeys(sc for sc, _ in cells):
        for group in groups:
            alike = [c for c in group if (sc, c) in cells]
            figures = tuple(cells[(sc, c)] for c in alike)
            best = most_within(figures, REPRODUCE_WITHIN_PP)
            if best < len(alike):
                reachable -= len(alike) - best
                std = summary[(sc, alike[0])][1]
                spreads.append(Spread(sc, tuple(alike), figures, best, std))
    return Bound(protocol.name, reachable, len(cells), tuple(spreads))


def bound_section(bounds: Sequence[Bound], seeds: int) -> str:
    """The page's section: each reading's spreads, its bound, and how far chance would have to
    set apart the separate, unseeded runs the paper's figures came from."""
    w = REPRODUCE_WITHIN_PP
    lines = [
        "| reading | scenario | columns trained alike | the paper's figures | spread | "
        f"most within {w:g} pp | our seed std |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for b in bounds:
        for s in b.spreads:
            lines.append(
                f"| {b.name} | {s.scenario} | {', '.join(f'`{c}`' for c in s.columns)} | "
                f"{', '.join(f'{f:.2f}' for f in s.figures)} | {s.spread:.2f} | "
                f"{s.reachable} of {len(s.columns)} | {s.seed_std:.2f} |"
            )
            apart = s.spread - 2 * w
            sd = s.seed_std * math.sqrt(2.0 / seeds)
            if sd > 0:
                z = apart / sd
                notes.append(
                    f"{b.name}, {s.scenario}: {seeds}-seed means of independent runs would "
                    f"have to fall {apart:.2f} pp apart, z = {z:.2f}, a one-sided chance of "
                    f"{chance_text(one_sided_chance(z))}"
                )
    if not any(b.spreads for b in bounds):
        return "Every reading's alike columns have paper figures one figure can meet.\n"
    counts = "; ".join(f"{b.name}: at most {b.reachable} of {b.cells} cells" for b in bounds)
    text = (
        f"The columns a reading trains alike (same method, rounds, local training and options) "
        f"score one figure, seeded, so where the paper's figures for them lie more than "
        f"{2 * w:g} pp apart no setting of that reading puts all of them within {w:g} pp: "
        f"{counts}, whatever learning rate, budget or generator it runs with, as long as those "
        "columns train alike. The paper's figures for them came from separate unseeded runs "
        "(new initial weights and batch order in every run, and from f01521c new data too); "
        "for chance alone to set them as far apart, measured on our seeds' spread (which "
        "redraws data and weights): " + "; ".join(notes) + "."
    )
    return "\n".join(lines) + "\n\n" + text + "\n"
