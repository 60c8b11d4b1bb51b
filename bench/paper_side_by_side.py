"""The table of both protocols on docs/results/synthetic.md: each paper-protocol column beside
the paper's figure and the converged protocol's, and how many of the paper's cells lie within 3 pp.

``bench/paper_report.py`` sets it on the page and ``bench/synthetic.py`` records its counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.paper_readings import (
    AT_2CB8DEE,
    FEDBN_BATCHNORM,
    FEDMAP_OMEGA,
    MATCHED,
    NOT_THE_CODE,
    PaperResults,
    bench_protocol,
    not_run_by_the_code,
)
from fedmap.experiment import SiteRecord
from fedmap.protocols import (
    PAPER,
    PAPER_TABLES,
    REPRODUCE_WITHIN_PP,
    EvaluationProtocol,
    MethodBudget,
    seed_summary,
)


def mean_std_cell(
    summary: Mapping[tuple[str, str], tuple[float, float, int]], key: tuple[str, str]
) -> str:
    """'mean ± std' of a ``seed_summary`` entry, or '-' where it has none."""
    if key not in summary:
        return "-"
    mean, std, _ = summary[key]
    return f"{mean:.2f} ± {std:.2f}"


CONVERGED_OF = {
    FEDMAP_OMEGA: "fedmap",
    "individual": "individual",
    MATCHED: "individual",
    FEDBN_BATCHNORM: "fedbn",
    "fedavg": "fedavg",
    "fedprox": "fedprox",
    "fedbn": "fedbn",
}
"""The converged protocol's method beside each paper-protocol column (its FedMAP uses omega)."""


def reported_method(column: str, budget: MethodBudget) -> str | None:
    """The paper's method (a key of ``PAPER_TABLES``) a column sits beside: the one it
    ``reports``, or, for a column that is not the code's, the one ``NOT_THE_CODE`` gives it."""
    return budget.reports or NOT_THE_CODE.get(column.removesuffix(AT_2CB8DEE), (None, ""))[0]


def paper_figure(scenario: str, column: str, budget: MethodBudget) -> float | None:
    """The paper's figure a column is compared with (``reported_method``'s), or None."""
    reports = reported_method(column, budget)
    return PAPER_TABLES[scenario].get(reports) if reports else None


def counted_cells(
    paper: PaperResults, protocol: EvaluationProtocol
) -> dict[tuple[str, str], float]:
    """The paper's figure of every cell ``side_by_side`` counts, by (scenario, column), in the
    records' scenario order: recorded, with a paper figure, and not a column of ``NOT_THE_CODE``
    (those are reported beside the paper's figure, never counted)."""
    recorded = {(r.scenario, r.method) for r in paper.records}
    cells: dict[tuple[str, str], float] = {}
    for sc in dict.fromkeys(r.scenario for r in paper.records):
        for column, budget in protocol.columns.items():
            figure = paper_figure(sc, column, budget)
            if (
                (sc, column) in recorded
                and figure is not None
                and column.removesuffix(AT_2CB8DEE) not in NOT_THE_CODE
            ):
                cells[(sc, column)] = figure
    return cells


def side_by_side(
    paper: PaperResults, converged: Sequence[SiteRecord], protocol: EvaluationProtocol | None = None
) -> tuple[str, int, int]:
    """The table of both protocols, and how many of the paper's cells are within 3 pp: for the
    protocol as committed (``bench_protocol``, the default) or another reading of it whose
    columns are named as recorded (``protocol_2cb8dee``)."""
    protocol = protocol or bench_protocol()
    ours = seed_summary(paper.records, PAPER.metric)
    conv_bal = seed_summary(converged, "balanced_accuracy")
    conv_acc = seed_summary(converged, "accuracy")
    lines = [
        f"| scenario | column | paper | ours, {protocol.name} protocol (balanced acc.) | "
        f"ours - paper | within {REPRODUCE_WITHIN_PP:g} pp | converged, balanced acc. | "
        "converged, accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    counted = counted_cells(paper, protocol)
    met = total = 0
    scenarios = dict.fromkeys(r.scenario for r in paper.records)
    for sc in scenarios:
        for column, budget in protocol.columns.items():
            if (sc, column) not in ours:
                continue
            base = column.removesuffix(AT_2CB8DEE)
            figure = paper_figure(sc, column, budget)
            mean = ours[(sc, column)][0]
            gap = "-" if figure is None else f"{mean - figure:+.2f}"
            verdict = "-"
            if figure is not None:
                within = abs(mean - figure) <= REPRODUCE_WITHIN_PP
                verdict = "yes" if within else "**no**"
                if (sc, column) in counted:
                    met, total = met + within, total + 1
                else:
                    verdict += f" ({NOT_THE_CODE[base][1]})"
            conv = (sc, CONVERGED_OF.get(base, ""))
            lines.append(
                f"| {sc} | {column} | {'-' if figure is None else f'{figure:.2f}'} | "
                f"{mean_std_cell(ours, (sc, column))} | {gap} | {verdict} | "
                f"{mean_std_cell(conv_bal, conv)} | {mean_std_cell(conv_acc, conv)} |"
            )
    return "\n".join(lines) + "\n", met, total


def counted_not_code(paper: PaperResults, protocol: EvaluationProtocol) -> str:
    """The clause naming the columns with cells ``side_by_side`` counted (``counted_cells``)
    that the authors' code never ran (``not_run_by_the_code``), e.g.
    "; counted, though the code never ran them: `fedmap-omega` (...)"; or ""."""
    not_code = not_run_by_the_code()
    cells = counted_cells(paper, protocol)
    counted = [c for c in protocol.columns if c in not_code and any(k[1] == c for k in cells)]
    if not counted:
        return ""
    return "; counted, though the code never ran them: " + "; ".join(
        f"`{c}` ({not_code[c]})" for c in counted
    )
