"""What a simulation leaves behind: results.json, summary.md tables and learning-curve plots."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fedmap.experiment import Run, SiteRecord
from fedmap.simulator import SimulationResult

METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC-AUC",
    "c_index": "C-index",
}


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(records: Sequence[SiteRecord], path: Path) -> None:
    write_atomic(path, json.dumps([r.as_dict() for r in records], indent=1) + "\n")


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
            parts.append(f"### {label}\n\n{scenario_table(rows, scenario, metric)}\n")
    counts = sorted({len({r.site for r in records if r.scenario == sc}) for sc in scenarios})
    sites = "-".join(str(c) for c in dict.fromkeys([counts[0], counts[-1]])) if counts else "0"
    parts.append(f"## time per round\n\n| method | seconds per round ({sites} sites) |\n|---|---|")
    parts.extend(f"| {m} | {s:.3f} |" for m, s in seconds_per_round.items())
    return "\n".join(parts) + "\n"


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
