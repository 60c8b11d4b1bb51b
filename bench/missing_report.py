"""The summaries, tables, target verdicts and figure of ``bench/missing.py``
(``docs/results/missing.md``), from its records alone: one per run and site, each with its
``strategy``, as ``missing_results.json`` holds them."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Records = Sequence[Mapping[str, Any]]
IMPUTED = ("median", "median+indicators")
"""The strategies that score every val row: the target and the tuning are theirs."""
UNTUNED = "fedmap-untuned"
"""FedMAP with the federation file's starting sigma^2, beside the tuned ``fedmap``."""
METRICS = ("roc_auc", "auprc", "brier", "ece")
LABELS = {"roc_auc": "AUROC", "auprc": "AUPRC", "brier": "Brier", "ece": "ECE"}
TOLERANCE = 0.01
"""No site's FedMAP AUROC may be more than this below its Individual AUROC."""
APACHE = "apache-iva"


def tuned_name(variance: float) -> str:
    """The method name of a tuning run of FedMAP with this sigma^2."""
    return f"fedmap@{variance:g}"


# ---- summaries -------------------------------------------------------------------------------


def seed_means(rows: Records, metric: str) -> dict[tuple[str, str], list[float]]:
    """(strategy, method) -> per seed, the unweighted mean over sites."""
    per: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in rows:
        per[(r["strategy"], r["method"], r["seed"])].append(float(r[metric]))
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (strategy, method, _), values in per.items():
        out[(strategy, method)].append(statistics.fmean(values))
    return out


def site_means(rows: Records, metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """(strategy, method) -> site -> the metric's mean over seeds."""
    per: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per[(r["strategy"], r["method"])][r["site"]].append(float(r[metric]))
    return {k: {s: statistics.fmean(v) for s, v in d.items()} for k, d in per.items()}


def _ms(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def choose(tuning: Records, grid: Sequence[float]) -> tuple[float, dict[float, dict[str, float]]]:
    """The grid's sigma^2 with the best AUROC, averaged over the imputing strategies of the mean
    over sites and tuning seeds; the first listed wins a tie."""
    means = seed_means(tuning, "roc_auc")
    table: dict[float, dict[str, float]] = {}
    for v in grid:
        per = {s: statistics.fmean(means[(s, tuned_name(v))]) for s in IMPUTED}
        table[v] = {**per, "mean": statistics.fmean(per.values())}
    best = max(grid, key=lambda v: table[v]["mean"])
    return best, table


def verdicts(rows: Records) -> tuple[str, dict[str, Any]]:
    """Per imputing strategy and FedMAP run: its mean-over-sites AUROC (mean over seeds) against
    max(Individual's, FedAvg's), and the sites more than TOLERANCE below their Individual AUROC."""
    figure = {k: statistics.fmean(v) for k, v in seed_means(rows, "roc_auc").items()}
    sites = site_means(rows, "roc_auc")
    lines = [
        "| strategy | FedMAP run | FedMAP | Individual | FedAvg | mean >= max? "
        f"| sites > {TOLERANCE} below Individual | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    numbers: dict[str, Any] = {}
    for strategy in IMPUTED:
        if (strategy, "individual") not in figure or (strategy, "fedavg") not in figure:
            continue
        local = sites[(strategy, "individual")]
        bar = max(figure[(strategy, "individual")], figure[(strategy, "fedavg")])
        for method in ("fedmap", UNTUNED):
            if (strategy, method) not in figure:
                continue
            mean = figure[(strategy, method)]
            gaps = {s: v - local[s] for s, v in sites[(strategy, method)].items()}
            below = {s: g for s, g in gaps.items() if g < -TOLERANCE}
            ok = mean >= bar and not below
            shown = ", ".join(f"{s} ({g:+.4f})" for s, g in below.items()) or "none"
            lines.append(
                f"| {strategy} | {method} | {mean:.4f} | {figure[(strategy, 'individual')]:.4f} "
                f"| {figure[(strategy, 'fedavg')]:.4f} | {'yes' if mean >= bar else '**no**'} "
                f"| {shown} | {'met' if ok else '**missed**'} |"
            )
            numbers[f"{strategy}/{method}"] = {
                "fedmap": mean,
                "bar": bar,
                "mean_ok": mean >= bar,
                "below_individual": below,
                "met": ok,
            }
    return "\n".join(lines), numbers


# ---- tables --------------------------------------------------------------------------------


def rows_table(scored: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| site | val.csv rows (deaths) | drop: scored (deaths) | median: scored | "
        "median+indicators: scored | train.csv rows | drop: trained on |",
        "|---|---|---|---|---|---|---|",
    ]
    totals: dict[str, int] = defaultdict(int)
    for r in scored:
        cells = {
            "val": r["val_rows"],
            "val_deaths": r["val_deaths"],
            "drop": r["drop"]["scored"],
            "drop_deaths": r["drop"]["deaths"],
            "median": r["median"]["scored"],
            "mi": r["median+indicators"]["scored"],
            "train": r["train_rows"],
            "drop_train": r["drop"]["train"],
        }
        for k, v in cells.items():
            totals[k] += v
        lines.append(_rows_line(r["site"], cells))
    lines.append(_rows_line("**all**", totals))
    return "\n".join(lines)


def _rows_line(site: str, c: Mapping[str, int]) -> str:
    share = c["drop"] / c["val"] if c["val"] else 0.0
    return (
        f"| {site} | {c['val']} ({c['val_deaths']}) | {c['drop']} ({c['drop_deaths']}), "
        f"{share:.0%} | {c['median']} | {c['mi']} | {c['train']} | {c['drop_train']} |"
    )


def headline_table(rows: Records, apache: Records) -> str:
    means = {m: seed_means(rows, m) for m in METRICS}
    head = " | ".join(LABELS[m] for m in METRICS)
    lines = [f"| strategy | method | {head} |", "|---|---|" + "---|" * len(METRICS)]
    for strategy, method in means["roc_auc"]:
        cells = " | ".join(_ms(means[m][(strategy, method)]) for m in METRICS)
        label = f"{strategy} †" if strategy == "drop" else strategy
        lines.append(f"| {label} | {method} | {cells} |")
    cells = " | ".join(f"{nanmean(r[m] for r in apache):.4f}" for m in METRICS)
    lines.append(f"| APACHE IVa ‡ | hospital mortality | {cells} |")
    return "\n".join(lines)


def nanmean(values: Any) -> float:
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return statistics.fmean(kept) if kept else float("nan")


def site_table(rows: Records, apache: Records, sites: Sequence[str]) -> str:
    per: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["strategy"] in IMPUTED:
            per[(r["strategy"], r["method"])][r["site"]].append(float(r["roc_auc"]))
    figure = seed_means([r for r in rows if r["strategy"] in IMPUTED], "roc_auc")
    lines = [
        "| strategy | method | " + " | ".join(sites) + " | **mean of sites** |",
        "|---|---|" + "---|" * (len(sites) + 1),
    ]
    for (strategy, method), values in per.items():
        cells = " | ".join(_ms(values[s]) for s in sites)
        lines.append(f"| {strategy} | {method} | {cells} | **{_ms(figure[(strategy, method)])}** |")
    by_site = {r["site"]: r for r in apache}
    cells = " | ".join(f"{by_site[s]['roc_auc']:.4f} (n={by_site[s]['scored']})" for s in sites)
    mean = nanmean(r["roc_auc"] for r in apache)
    lines.append(f"| APACHE IVa ‡ | hospital mortality | {cells} | **{mean:.4f}** |")
    return "\n".join(lines)


def apache_table(apache: Records) -> str:
    lines = [
        "| site | val.csv rows | with a IVa prediction (deaths) | AUROC | AUPRC | Brier | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in apache:
        lines.append(
            f"| {r['site']} | {r['val_rows']} | {r['scored']} ({r['deaths']}) | "
            + " | ".join(f"{r[m]:.4f}" for m in METRICS)
            + " |"
        )
    return "\n".join(lines)


def tuning_table(table: Mapping[float, Mapping[str, float]], chosen: float, default: float) -> str:
    lines = [
        "| sigma^2 | median | median+indicators | mean of the two | |",
        "|---|---|---|---|---|",
    ]
    for v, t in table.items():
        note = "**chosen**" if v == chosen else ("file's starting value" if v == default else "")
        lines.append(
            f"| {v:g} | {t['median']:.4f} | {t['median+indicators']:.4f} | {t['mean']:.4f} "
            f"| {note} |"
        )
    return "\n".join(lines)


# ---- the figure ------------------------------------------------------------------------------


def plot(rows: Records, apache: Records, curves: Mapping[str, Any], path: Path) -> None:
    """Left: mean-over-sites AUROC per strategy and method (sd over seeds), APACHE IVa's as a
    line. Right: the pooled reliability curve of each method under median+indicators."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = seed_means(rows, "roc_auc")
    strategies = list(dict.fromkeys(s for s, _ in means))
    methods = list(dict.fromkeys(m for _, m in means))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    colour = {m: f"C{i}" for i, m in enumerate(methods)}
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [means.get((s, method), [math.nan]) for s in strategies]
        heights = [statistics.fmean(v) for v in values]
        errors = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        left.bar(
            np.arange(len(strategies)) + i * width,
            heights,
            width,
            yerr=errors,
            label=method,
            color=colour[method],
        )
    left.axhline(nanmean(r["roc_auc"] for r in apache), color="k", ls="--", label="APACHE IVa")
    ticks = [f"{s}\n(complete cases only)" if s == "drop" else s for s in strategies]
    left.set_xticks(np.arange(len(strategies)) + 0.4 - width / 2, ticks)
    left.set_ylim(0.5, 1.0)
    left.set_ylabel("AUROC, mean of sites")
    left.grid(axis="y", alpha=0.3)
    left.legend(fontsize=7, ncol=3, loc="upper right")
    right.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for name, curve in curves.items():
        n = np.asarray(curve.counts)
        keep = n > 0
        x, y = np.asarray(curve.mean_predicted)[keep], np.asarray(curve.observed)[keep]
        ls, c = ("--", "k") if name == APACHE else ("-", colour.get(name))
        right.plot(x, y, ls=ls, color=c, marker="o", ms=3, label=f"{name} (n={int(n.sum())})")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_xlabel("mean predicted risk (bin)")
    right.set_ylabel("observed mortality")
    right.set_title("reliability, median+indicators, all sites and seeds", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
