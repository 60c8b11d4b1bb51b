"""The cell-by-cell table of docs/results/synthetic.md: for each of the paper's figures, the
reading of the authors' code whose figure is nearest, and how many figures lie within 3 pp of some
reading and of one the code ran (``bench.paper_readings.not_run_by_the_code``).

``bench/paper_report.py`` sets the table on the page; ``bench/paper_protocol.py`` records its
counts as DVC metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.paper_readings import (
    PaperResults,
    bench_protocol,
    not_run_by_the_code,
    protocol_2cb8dee,
)
from bench.paper_side_by_side import reported_method
from fedmap.protocols import (
    PAPER,
    PAPER_TABLES,
    REPRODUCE_WITHIN_PP,
    EvaluationProtocol,
    seed_summary,
)


def reports_by_column(
    protocols: Sequence[EvaluationProtocol] | None = None,
) -> dict[str, str]:
    """The paper's method (a key of ``PAPER_TABLES``) each recorded column sits beside, under
    any reading: by default the committed protocol's columns, those of ``NOT_THE_CODE``, and
    2cb8dee's (``bench_protocol``, ``protocol_2cb8dee``)."""
    out: dict[str, str] = {}
    for protocol in (bench_protocol(), protocol_2cb8dee()) if protocols is None else protocols:
        for column, budget in protocol.columns.items():
            reports = reported_method(column, budget)
            if reports:
                out[column] = reports
    return out


def _count(n: int, noun: str) -> str:
    """'1 figure', '2 figures'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class ClosestReadings:
    """The cell-by-cell table and its counts: paper figures within 3 pp of some reading
    (``met``), of any reading the authors' code ran (``met_code``), of ``total``."""

    text: str
    met: int
    met_code: int
    total: int


def closest_readings(
    paper: PaperResults, protocols: Sequence[EvaluationProtocol] | None = None
) -> ClosestReadings:
    """Per scenario and paper figure, every reading's gap and the closest; how many figures at
    least one reading puts within 3 pp, of how many. A best case: each cell picks its reading.
    The text also counts the figures within 3 pp of a reading the authors' code ran."""
    ours = seed_summary(paper.records, PAPER.metric)
    reports = reports_by_column(protocols)
    not_code = not_run_by_the_code()
    scenarios = list(dict.fromkeys(r.scenario for r in paper.records))
    lines = [
        "| scenario | paper's column | paper | closest reading | ours | ours - paper | "
        f"within {REPRODUCE_WITHIN_PP:g} pp | closest reading the code ran | "
        "every reading: ours - paper |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    met = total = met_code = no_code = 0
    missed: list[str] = []
    compared: set[str] = set()
    for sc in scenarios:
        for method, figure in PAPER_TABLES[sc].items():
            gaps = {
                c: ours[(s, c)][0] - figure
                for (s, c) in ours
                if s == sc and reports.get(c) == method
            }
            if not gaps:
                continue
            compared |= set(gaps)
            best = min(gaps, key=lambda c: abs(gaps[c]))
            within = abs(gaps[best]) <= REPRODUCE_WITHIN_PP
            met, total = met + within, total + 1
            if not within:
                missed.append(f"{sc} {method} (nearest {gaps[best]:+.2f}, `{best}`)")
            code = [c for c in gaps if c not in not_code]
            code_cell = "-"
            no_code += not code
            if code:
                near = min(code, key=lambda c: abs(gaps[c]))
                code_within = abs(gaps[near]) <= REPRODUCE_WITHIN_PP
                met_code += code_within
                code_cell = f"`{near}` {gaps[near]:+.2f}" + ("" if code_within else " **no**")
            every = "; ".join(f"`{c}` {g:+.2f}" for c, g in gaps.items())
            lines.append(
                f"| {sc} | {method} | {figure:.2f} | `{best}` | {ours[(sc, best)][0]:.2f} | "
                f"{gaps[best]:+.2f} | {'yes' if within else '**no**'} | {code_cell} | {every} |"
            )
    if total == 0:
        return ClosestReadings("\n".join(lines) + "\n\nNo figure of the paper has a reading.\n",
                               0, 0, 0)  # fmt: skip
    outside = [c for c in not_code if c in compared]
    if outside:
        which = (
            f"{_count(len(outside), 'reading')} of those compared "
            f"{'is' if len(outside) == 1 else 'are'} not what the authors' code ran ("
            + "; ".join(f"`{c}`: {not_code[c]}" for c in outside)
            + ")"
        )
    else:
        which = "every reading compared is one the authors' code ran"
    unread = (
        f" ({_count(no_code, 'figure')} with no such reading, shown as -, count as missed)"
        if no_code
        else ""
    )
    figures = (
        f"the paper's one figure {'lies' if met else 'does not lie'}"
        if total == 1
        else f"{met} of the paper's {total} figures {'lies' if met == 1 else 'lie'}"
    )
    text = (
        f"Cell by cell, {figures} within {REPRODUCE_WITHIN_PP:g} pp of "
        f"{'any' if total == 1 and not met else 'at least one'} reading. This is a best case, "
        "not a protocol: each cell picks its own reading, and "
        f"{which}. Counting only readings the code ran, {met_code} of {total} "
        f"{'lies' if met_code == 1 else 'lie'} within {REPRODUCE_WITHIN_PP:g} pp{unread}."
    )
    if missed:
        text += f" No reading reaches {'; '.join(missed)}."
    return ClosestReadings("\n".join(lines) + "\n\n" + text + "\n", met, met_code, total)
