"""Benchmark on FLamby's real federations: every method x model x seed of params.yaml ``real``.

Reads the federation file (the same YAML the DAG and ``fedmap simulate --federation`` run), trains
every method with the file's budget, scores each site on its own test split (``val.csv``) and
writes ``<out>/<name>.md`` (our numbers beside FLamby's published ones, the target, the equity
report), ``<name>_results.json`` (one record per run and site), ``<name>_metrics.json`` (DVC
metrics) and ``<name>.png``. Run through ``dvc repro benchmark_real@heart_disease`` /
``benchmark_real@tcga_brca``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from bench.flamby import FLAMBY, Reference
from fedmap.comparison import ComparisonRun, compare, records, variants_of
from fedmap.equity import equity, equity_markdown
from fedmap.report import write_atomic
from fedmap.schema import Federation, read_federation

Records = Sequence[Mapping[str, Any]]


def metric_of(spec: Federation) -> str:
    return "c_index" if spec.task.recipe.type == "survival" else "accuracy"


def site_means(rows: Records, metric: str) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(model, method) -> site -> the metric over seeds."""
    out: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r["model"], r["method"])][r["site"]].append(float(r[metric]))
    return out


def seed_means(rows: Records, metric: str) -> dict[tuple[str, str], list[float]]:
    """(model, method) -> per seed, the unweighted mean over sites (FLamby's figure value)."""
    per: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in rows:
        per[(r["model"], r["method"], r["seed"])].append(float(r[metric]))
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (model, method, _), values in sorted(per.items()):
        out[(model, method)].append(statistics.fmean(values))
    return out


def _ms(values: Sequence[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {sd:.4f}"


def comparison_table(rows: Records, metric: str, ref: Reference, sites: Sequence[str]) -> str:
    means = site_means(rows, metric)
    figure = seed_means(rows, metric)
    head = "| model | method | " + " | ".join(sites) + f" | **mean of {len(sites)} sites** |"
    lines = [head, "|---|---|" + "---|" * (len(sites) + 1)]
    for (model, method), per_site in means.items():
        cells = " | ".join(_ms(per_site[s]) for s in sites)
        lines.append(f"| {model} | {method} | {cells} | **{_ms(figure[(model, method)])}** |")
    for name, values in ref.rows.items():
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| FLamby | {name} | {cells} | **{ref.figure[name]:.4f}** |")
    return "\n".join(lines)


def targets(rows: Records, metric: str, ref: Reference) -> tuple[str, dict[str, Any]]:
    """The issue's targets, pass or fail, per model: FedMAP's mean >= ref.target, and (binary)
    no site below its own local model."""
    means = site_means(rows, metric)
    figure = seed_means(rows, metric)
    lines, numbers = [], {}
    if not any(m == "individual" for (_, m) in means):
        return "The comparison has no `individual` method, so the targets cannot be checked.", {}
    for model in dict.fromkeys(r["model"] for r in rows):
        local = {s: statistics.fmean(v) for s, v in means[(model, "individual")].items()}
        for method in [m for (mo, m) in figure if mo == model and m.startswith("fedmap")]:
            mean = statistics.fmean(figure[(model, method)])
            per_site = {s: statistics.fmean(v) for s, v in means[(model, method)].items()}
            below = [s for s in per_site if per_site[s] < local[s] - 1e-12]
            ok = mean >= ref.target and (not ref.no_site_below_local or not below)
            verdict = "met" if ok else "**missed**"
            detail = f"sites below their local model: {', '.join(below) or 'none'}"
            lines.append(
                f"| {model} | {method} | {mean:.4f} | {ref.target:.2f} | {detail} | {verdict} |"
            )
            numbers[f"{model}/{method}"] = {"mean": mean, "met": ok, "below_local": below}
    head = (
        f"| model | method | mean {metric} | target | sites | verdict |\n|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(lines), numbers


def equity_sections(rows: Records, metric: str) -> str:
    means = site_means(rows, metric)
    if not any(m == "individual" for (_, m) in means):
        return "No `individual` method to measure gains against.\n"
    parts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        scores = {
            method: {s: statistics.fmean(v) for s, v in per_site.items()}
            for (mo, method), per_site in means.items()
            if mo == model
        }
        label = metric.replace("_", "-")
        scale = 100.0 if metric == "accuracy" else 1.0
        table = equity_markdown(equity(scores, "individual"), label, scale)
        parts.append(f"### {model}\n\n{table}")
    return "\n".join(parts)


def plot(rows: Records, metric: str, sites: Sequence[str], path: Path, title: str) -> None:
    """One panel per model: per-site bars for each method, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    means = site_means(rows, metric)
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        methods = [m for (mo, m) in means if mo == model]
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            heights = [statistics.fmean(means[(model, method)][s]) for s in sites]
            ax.bar(np.arange(len(sites)) + i * width, heights, width, label=method)
        ax.set_xticks(np.arange(len(sites)) + 0.4 - width / 2, sites)
        ax.set_ylim(0.4, 1.0)
        ax.set_ylabel(metric.replace("_", "-"))
        ax.set_title(model)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def page(spec: Federation, rows: Records, ref: Reference, seconds: float, seeds: list[int]) -> str:
    metric = metric_of(spec)
    sites = [s.name for s in spec.tier(1)]
    algo = spec.algorithm
    target_table, _ = targets(rows, metric, ref)
    return f"""# {ref.title}

Generated by `dvc repro benchmark_real@{spec.name}` (`bench/real.py`) from
[`federations/{spec.name}.yaml`](../../federations/{spec.name}.yaml) in {seconds / 60:.1f} min on
2 CPU cores. Do not edit by hand.

{ref.setup}

**Our protocol.** Every method trains with the federation file's budget: {algo.rounds} rounds of
{algo.epochs} local epoch(s), batch size {algo.batch_size}, Adam with lr {algo.lr}; Individual
trains on the site alone for the same {algo.rounds * algo.epochs} epochs. FedMAP uses sigma^2 =
{algo.variance} and input_variance = {algo.input_variance} in its Gaussian prior; the diagonal and
ICNN priors are learnt (see [priors.md](priors.md)). Seeds {seeds}. Each site is scored on its own
test split with its own model (FLamby's "local" numbers are the same: a centre's model on its own
test set). Values are mean ± sd over seeds; the last column is the unweighted mean over sites,
FLamby's figure value, with the sd across seeds of that mean.

## {metric.replace("_", "-")} per site

{comparison_table(rows, metric, ref, sites)}

![per-site {metric}]({spec.name}.png)

## Target

{ref.target_text}

{target_table}

## Equity

Each site's gain over its local model (Individual), the worst-served site (the one whose local
model is weakest) and the spread across sites.

{equity_sections(rows, metric)}
{clinical_section(rows)}
{ref.notes}
"""


def clinical_section(rows: Records) -> str:
    """Binary tasks: AUROC, AUPRC, Brier score and ECE per model and method (``fedmap.report``);
    empty for a survival task."""
    from fedmap.comparison import RECORD_KEYS
    from fedmap.experiment import SiteRecord
    from fedmap.report import clinical_markdown

    records = [
        SiteRecord(
            str(r["model"]),
            str(r["method"]),
            int(r["seed"]),
            str(r["site"]),
            {k: float(v) for k, v in r.items() if k not in RECORD_KEYS},
        )
        for r in rows
    ]
    text = clinical_markdown(records)
    return text.replace("## clinical metrics", "## Clinical metrics", 1) if text else ""


def _tick(bar: tqdm[Any]) -> None:
    bar.update()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--federation", type=Path, required=True, help="federations/<name>.yaml")
    parser.add_argument("--config", type=Path, default=Path("params.yaml"), help="its `real` key")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--seeds", help="comma-separated, overrides the config (a quick look)")
    args = parser.parse_args(argv)
    spec = read_federation(args.federation)
    config = yaml.safe_load(args.config.read_text())["real"]
    own = config.get(spec.name, {})
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(config["seeds"])
    variants = variants_of(own.get("methods", config["methods"]))
    runs = [
        ComparisonRun(v, model, seed)
        for model in own.get("models", [spec.task.model])
        for v in variants
        for seed in seeds
    ]
    print(f"{spec.name}: {len(runs)} runs on {len(spec.tier(1))} sites", file=sys.stderr)
    start = time.perf_counter()
    with tqdm(total=len(runs), unit="run", desc=spec.name, file=sys.stderr) as bar:
        results = compare(
            spec, runs, jobs=int(config.get("jobs", 1)), progress=lambda _r: _tick(bar)
        )
    seconds = time.perf_counter() - start
    rows = records(spec, results)
    ref = FLAMBY[spec.name]
    metric = metric_of(spec)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / f"{spec.name}_results.json", json.dumps(rows, indent=1) + "\n")
    _, numbers = targets(rows, metric, ref)
    figure = {f"{mo}/{me}": statistics.fmean(v) for (mo, me), v in seed_means(rows, metric).items()}
    metrics = {"mean": figure, "targets": numbers, "seconds": round(seconds, 1)}
    write_atomic(args.out / f"{spec.name}_metrics.json", json.dumps(metrics, indent=1) + "\n")
    plot(rows, metric, [s.name for s in spec.tier(1)], args.out / f"{spec.name}.png", ref.title)
    write_atomic(args.out / f"{spec.name}.md", page(spec, rows, ref, seconds, seeds))
    print(f"wrote {args.out / (spec.name + '.md')} in {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
