"""What a simulation leaves behind: results.json, summary.md tables, learning-curve plots and, for a
binary task, the clinical-metrics table and the reliability plot."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedmap.experiment import Run, SiteRecord
from fedmap.metrics import LOWER_IS_BETTER, Reliability, pool_reliability
from fedmap.simulator import SimulationResult

METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC-AUC",
    "auprc": "AUPRC",
    "brier": "Brier score",
    "ece": "ECE",
    "c_index": "C-index",
}
CLINICAL_METRICS = ("roc_auc", "auprc", "brier", "ece")
"""The clinical-metrics table's columns: discrimination, then calibration."""


def json_numbers(value: Any) -> Any:
    """value with every non-finite float (a NaN ROC-AUC or AUPRC of a one-class split) as None,
    so the JSON written is standard JSON: ``NaN`` is not a JSON token."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_numbers(v) for v in value]
    return value


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(records: Sequence[SiteRecord], path: Path) -> None:
    rows = json_numbers([r.as_dict() for r in records])
    write_atomic(path, json.dumps(rows, indent=1, allow_nan=False) + "\n")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring NaN."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def _cell(values: Sequence[float]) -> str:
    m, s = mean_std([100.0 * v for v in values])
    return f"{m:.2f} ± {s:.2f}"


def site_average(records: Iterable[SiteRecord], metric: str) -> dict[tuple[str, str, int], float]:
    """The site-average of metric per (scenario, method, seed)."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in records:
        groups[(r.scenario, r.method, r.seed)].append(r.metric(metric))
    return {k: float(np.nanmean(v)) for k, v in groups.items()}


def scenario_table(records: Sequence[SiteRecord], scenario: str, metric: str = "accuracy") -> str:
    """Sites as rows, methods as columns, mean ± std over seeds, in percent (paper's Tables 1/3/4)."""
    rows = [r for r in records if r.scenario == scenario]
    methods = list(dict.fromkeys(r.method for r in rows))
    sites = sorted({r.site for r in rows})
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        cells[(r.site, r.method)].append(r.metric(metric))
    avg = site_average(rows, metric)
    lines = [
        "| site | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for site in sites:
        lines.append(f"| {site} | " + " | ".join(_cell(cells[(site, m)]) for m in methods) + " |")
    averages = [
        _cell([v for (sc, me, _), v in avg.items() if sc == scenario and me == m]) for m in methods
    ]
    lines.append("| **average** | " + " | ".join(f"**{a}**" for a in averages) + " |")
    return "\n".join(lines)


def summary_markdown(records: Sequence[SiteRecord], seconds_per_round: dict[str, float]) -> str:
    """Per-scenario tables of each metric its records hold (accuracy, balanced accuracy and
    ROC-AUC for a binary task, C-index for a survival task) plus the time per round of each method.
    """
    parts = []
    seeds = sorted({r.seed for r in records})
    scenarios = list(dict.fromkeys(r.scenario for r in records))
    for scenario in scenarios:
        rows = [r for r in records if r.scenario == scenario]
        parts.append(f"## {scenario}\n")
        parts.append(f"Validation scores in percent, mean ± std over seeds {seeds}.\n")
        for metric in dict.fromkeys(m for r in rows for m in r.metrics):
            label = METRIC_LABELS.get(metric, metric)
            if metric in LOWER_IS_BETTER:
                label += " (lower is better)"
            parts.append(f"### {label}\n\n{scenario_table(rows, scenario, metric)}\n")
    counts = sorted({len({r.site for r in records if r.scenario == sc}) for sc in scenarios})
    sites = "-".join(str(c) for c in dict.fromkeys([counts[0], counts[-1]])) if counts else "0"
    parts.append(f"## time per round\n\n| method | seconds per round ({sites} sites) |\n|---|---|")
    parts.extend(f"| {m} | {s:.3f} |" for m, s in seconds_per_round.items())
    return "\n".join(parts) + "\n"


def clinical_markdown(records: Sequence[SiteRecord], per_site_limit: int = 5) -> str:
    """The "clinical metrics" section: per method, ROC-AUC, AUPRC, Brier score and ECE, each the
    mean over seeds of the site-average (± the std over seeds), on the metric's own scale; with at
    most per_site_limit sites, a second table per site (mean ± std over seeds). Empty when the
    records carry none of these metrics (a survival task)."""
    binary = [r for r in records if all(m in r.metrics for m in CLINICAL_METRICS)]
    if not binary:
        return ""
    header = "| " + " | ".join(METRIC_LABELS[m] for m in CLINICAL_METRICS) + " |"
    rule = "|---|" + "---|" * len(CLINICAL_METRICS)

    def cell(values: Sequence[float]) -> str:
        m, s = mean_std(values)
        return f"{m:.3f} ± {s:.3f}"

    parts = [
        "## clinical metrics\n",
        "Discrimination (ROC-AUC, AUPRC: higher is better) and calibration (Brier score, ECE "
        "over 10 equal-width bins: lower is better) on the validation splits, mean over sites "
        "and seeds ± std over seeds of the site-average.\n",
    ]
    scenarios = list(dict.fromkeys(r.scenario for r in binary))
    for scenario in scenarios:
        rows = [r for r in binary if r.scenario == scenario]
        methods = list(dict.fromkeys(r.method for r in rows))
        avg = {m: site_average(rows, m) for m in CLINICAL_METRICS}
        if len(scenarios) > 1:
            parts.append(f"### {scenario}\n")
        lines = ["| method " + header, rule]
        for method in methods:
            cells = [
                cell([v for (_, me, _), v in avg[m].items() if me == method])
                for m in CLINICAL_METRICS
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
        sites = sorted({r.site for r in rows})
        if len(sites) <= per_site_limit:
            lines = ["| site | method " + header, "|---" + rule]
            for site in sites:
                for method in methods:
                    mine = [r for r in rows if r.site == site and r.method == method]
                    cells = [cell([r.metric(m) for r in mine]) for m in CLINICAL_METRICS]
                    lines.append(f"| {site} | {method} | " + " | ".join(cells) + " |")
            parts.append("Per site, mean ± std over seeds:\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def mean_seconds_per_round(results: Sequence[tuple[Run, SimulationResult]]) -> dict[str, float]:
    per: dict[str, list[float]] = defaultdict(list)
    for run, res in results:
        per[run.method].append(res.seconds_per_round)
    return {m: statistics.fmean(v) for m, v in per.items()}


def plot_curves(results: Sequence[tuple[Run, SimulationResult]], path: Path, title: str) -> None:
    """Validation score per round for each site (one panel per site, one line per method, mean
    over seeds with a band of one standard deviation), as in the paper's Figure 1. The score is
    the task's primary metric: accuracy, or the C-index of a survival task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[np.ndarray]] = defaultdict(list)
    sites: tuple[str, ...] = ()
    metric = "accuracy"
    for run, res in results:
        by_method[run.method].append(100.0 * np.asarray(res.history))
        sites, metric = res.sites, res.metric
    cols = min(5, len(sites))
    rows = math.ceil(len(sites) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharex=True, squeeze=False
    )
    for k, site in enumerate(sites):
        ax = axes[k // cols][k % cols]
        for method, curves in by_method.items():
            stack = np.stack(curves)[:, :, k]
            mean, std = stack.mean(axis=0), stack.std(axis=0)
            x = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(x, mean, label=method, lw=1.2)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(site, fontsize=9)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel(f"val. {METRIC_LABELS.get(metric, metric)} (%)")
        if k // cols == rows - 1:
            ax.set_xlabel("round")
    for k in range(len(sites), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def pooled_reliability(
    results: Sequence[tuple[Run, SimulationResult]],
) -> dict[str, dict[str, Reliability]]:
    """method -> site -> the site's reliability curve pooled over the method's seeds
    (``pool_reliability``: the counts add, so it is the curve of every seed's predictions)."""
    per: dict[str, dict[str, list[Reliability]]] = defaultdict(lambda: defaultdict(list))
    for run, res in results:
        for site, curve in res.reliability.items():
            per[run.method][site].append(curve)
    return {m: {s: pool_reliability(c) for s, c in d.items()} for m, d in per.items()}


def plot_reliability(
    results: Sequence[tuple[Run, SimulationResult]], path: Path, title: str
) -> None:
    """Reliability plot of the final models: one panel per site, one line per method (observed
    frequency of the positive class against mean predicted probability, per bin, pooled over
    seeds; empty bins left out), with the diagonal of perfect calibration."""
    curves = pooled_reliability(results)
    if not curves:
        raise ValueError("no reliability curves to plot (they come with a binary task)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(dict.fromkeys(site for _, res in results for site in res.reliability))
    cols = min(5, len(sites))
    rows = math.ceil(len(sites) / cols)
    height = 3.4 * rows + 0.8  # and room for the legend below and the title above
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.0 * cols, height), sharex=True, sharey=True, squeeze=False
    )
    for k, site in enumerate(sites):
        ax = axes[k // cols][k % cols]
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfectly calibrated")
        for method, per_site in curves.items():
            if site not in per_site:
                continue
            curve = per_site[site]
            seen = np.asarray(curve.counts) > 0
            x = np.asarray(curve.mean_predicted)[seen]
            y = np.asarray(curve.observed)[seen]
            ax.plot(x, y, marker="o", ms=3, lw=1.2, label=method)
        ax.set_title(site, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("observed frequency")
        if k + cols >= len(sites):  # the lowest panel of its column
            ax.set_xlabel("mean predicted probability")
            ax.tick_params(labelbottom=True)
    for k in range(len(sites), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.35 / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
