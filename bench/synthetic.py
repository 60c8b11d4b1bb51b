"""Benchmark: every method x scenario x seed on the paper's synthetic federation (our converged
protocol), set beside the authors' protocol.

Regenerates docs/results/synthetic.md: the paper protocol's figures (read from
docs/results/synthetic_paper_results.json, which ``bench/paper_protocol.py`` writes) beside ours,
then our tables, the paper's targets with pass/fail and timings; also
docs/results/synthetic_<scenario>.png (validation accuracy per round and site) and
docs/results/synthetic_metrics.json (DVC metrics, with how many of the paper's cells lie within
3 pp: ``bench.paper_report.paper_counts``). Run through ``dvc repro benchmark_synthetic``
(``make bench``), which runs stage ``paper_protocol`` first when its inputs changed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from bench.paper_readings import PaperResults, load_paper_results
from bench.paper_report import paper_counts, paper_section
from fedmap.config import ExperimentConfig, load_config
from fedmap.equity import equity, equity_markdown
from fedmap.experiment import Run, SiteRecord, records_of, run_all
from fedmap.protocols import PAPER_TABLES
from fedmap.report import (
    mean_seconds_per_round,
    plot_curves,
    scenario_table,
    site_average,
    write_atomic,
    write_results,
)
from fedmap.simulator import SimulationResult

# Site-average validation accuracy from the paper (v1, Tables 1, 3 and 4).
PAPER = PAPER_TABLES
# FedMAP's margin over Individual, in accuracy points, that the issue asks us to match.
TARGET_MARGIN = {"feature-skew": 2.9, "quantity-skew": 3.7, "label-skew": 5.2}
MAX_SITE_DEFICIT = 1.0
TIME_BUDGET_S = 15 * 60

TRIED = """\
### What was tried

Tuning used single seeds (0 and 1) and the same settings for every method; the benchmark above
then runs seeds 0-2 once. Figures are site-average validation accuracy after the last round.

- **Generator noise.** Appendix B.1 (nuisance variance 2, our default) makes the task easy:
  Individual reaches 93-94% after 40-60 rounds, leaving little room above it. The authors' code
  uses variance 9, which brings Individual to the paper's level (87% feature skew, 80% quantity
  skew, 88% label skew with lr 1e-2) but did not widen FedMAP's margin (+0.4 to +2.0 points).
- **sigma^2 on every layer (the authors' 15, and 1, 5, 60).** With warm-started theta_k, sigma^2 = 15
  matches or trails Individual by up to 1 point; smaller sigma^2 pulls the input layers of unrelated
  sites together and costs 2-7 points (sigma^2 = 1: 84.6% vs 91.7% on quantity skew, seed 0);
  sigma^2 = 60 equals Individual. Each site's random affine map makes its input layer site-specific,
  so a prior centred on the average input layer only hurts.
- **A weak prior on the input layer** (``input_variance: .inf``, the others sigma^2 = 0.5-3). This is
  the one setting that helps on all three scenarios (+1 to +2 points): sites keep their own input
  layer, which absorbs the affine map, and share the rest through the prior. The authors' code does
  not: only its first commit (0c80483) treats the first layer apart, copying the site's previous
  first layer back over gamma's each round while its Gaussian penalty still covers that layer, and
  from 2cb8dee on every layer resumes from the site's own model and every layer is penalised
  (sigma^2 = 15). Ours is a per-layer Gaussian prior, so the MAP objective and omega_k stay exact.
- **Restarting theta_k from gamma each round** (all layers, or all but the input layer as the
  authors' first commit does): no better than warm starts (-0.6 to +1.5 points).
- **Stronger sharing of the other layers** (sigma^2 = 0.2 and 0.05 with a free input layer) costs
  up to 4.6 points on quantity skew (seed 2: 92.0% at sigma^2 = 1, 90.0% at 0.2, 86.7% at 0.05).
- **Learning rate, rounds, local epochs, batch size.** lr 1e-3 needs 100+ rounds to converge
  (Individual 91.7% after 30 rounds, 94% after 150); lr 1e-2 converges in about 30 rounds at the
  same accuracy. Two local epochs x 20 rounds and batch 32 gave the same margins (+1 to +2.4
  points). The benchmark uses lr 1e-2, one local epoch, batch 64, 40 rounds.
- **omega against sample-count weights** (the ablation switch): within 0.3 points of each other
  here (seed 2: 92.03% vs 91.70% quantity skew, 94.87% vs 94.83% label skew), because every
  site's per-sample log omega ends up close to the others'.

The paper's margins (+2.9, +3.7, +5.2 points) are therefore not reproduced: FedMAP beats
Individual on every scenario, by one to two points, and FedAvg and FedProx fall well below
Individual as in the paper. The paper's absolute figures (Individual 75-83%) are far below what
Individual reaches on the appendix generator once trained to convergence (90-94%); the
paper-protocol sections above run the authors' own generator, metric and budgets.
"""


def pct(x: float) -> str:
    return f"{x:.2f}"


def averages(records: Sequence[SiteRecord]) -> dict[tuple[str, str], float]:
    """Site-average accuracy (percent) per (scenario, method), averaged over seeds."""
    per_seed = site_average(records, "accuracy")
    grouped: dict[tuple[str, str], list[float]] = {}
    for (scenario, method, _), value in per_seed.items():
        grouped.setdefault((scenario, method), []).append(100.0 * value)
    return {k: statistics.fmean(v) for k, v in grouped.items()}


def site_means(records: Sequence[SiteRecord], scenario: str, method: str) -> dict[str, float]:
    """Per-site accuracy (percent), averaged over seeds."""
    out: dict[str, list[float]] = {}
    for r in records:
        if r.scenario == scenario and r.method == method:
            out.setdefault(r.site, []).append(100.0 * r.accuracy)
    return {s: statistics.fmean(v) for s, v in sorted(out.items())}


def check_targets(
    records: Sequence[SiteRecord], scenarios: Sequence[str], wall_s: float
) -> list[dict[str, object]]:
    avg = averages(records)
    checks: list[dict[str, object]] = []
    for sc in scenarios:
        margin = avg[(sc, "fedmap")] - avg[(sc, "individual")]
        checks.append(
            {
                "target": f"{sc}: FedMAP - Individual >= +{TARGET_MARGIN[sc]} pp",
                "measured": f"{margin:+.2f} pp",
                "met": margin >= TARGET_MARGIN[sc],
            }
        )
        fm, ind = site_means(records, sc, "fedmap"), site_means(records, sc, "individual")
        worst_site = min(fm, key=lambda s: fm[s] - ind[s])
        worst = fm[worst_site] - ind[worst_site]
        checks.append(
            {
                "target": f"{sc}: no site more than {MAX_SITE_DEFICIT} pp below Individual",
                "measured": f"worst {worst_site}: {worst:+.2f} pp",
                "met": worst >= -MAX_SITE_DEFICIT,
            }
        )
        if sc in ("feature-skew", "label-skew"):
            for m in ("fedavg", "fedprox"):
                gap = avg[(sc, m)] - avg[(sc, "individual")]
                checks.append(
                    {
                        "target": f"{sc}: {m} below Individual",
                        "measured": f"{gap:+.2f} pp",
                        "met": gap < 0,
                    }
                )
    checks.append(
        {
            "target": f"whole benchmark under {TIME_BUDGET_S // 60} min on 2 cores",
            "measured": f"{wall_s / 60:.1f} min",
            "met": wall_s < TIME_BUDGET_S,
        }
    )
    return checks


def render(
    config: ExperimentConfig,
    records: Sequence[SiteRecord],
    results: Sequence[tuple[Run, SimulationResult]],
    checks: Sequence[dict[str, object]],
    wall_s: float,
    paper: PaperResults,
) -> str:
    b = config.benchmark
    avg = averages(records)
    sim = config.simulation
    lines = [
        "# Synthetic benchmark (FedMAP v1, appendix B.1): the authors' protocol and ours",
        "",
        "Generated by `make bench` (`dvc repro benchmark_synthetic`: `python -m bench.synthetic`, "
        "which reads the paper protocol's runs from stage `paper_protocol`, "
        "`python -m bench.paper_protocol`); do not edit by hand.",
        "",
        paper_section(paper, records),
        "## Converged protocol (ours)",
        "",
        "What `fedmap simulate --scenario` runs by default (`--protocol converged`).",
        f"Scenarios {', '.join(b.scenarios)}; methods {', '.join(b.methods)}; seeds {list(b.seeds)}.",
        f"Federation: {sim.rounds} rounds, model `{sim.model}`, {sim.training.epochs} local epoch(s), "
        f"batch {sim.training.batch_size}, Adam lr {sim.training.lr}. Generator: {config.synthetic}. "
        f"Method options: {json.dumps(config.methods)}.",
        "Scores are on each site's own validation split (30%), after the last round: personalised "
        "methods with each site's own model, FedAvg and FedProx with the global model.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else '**no**'} |" for c in checks
    ]
    lines += ["", "### Site-average accuracy against the paper", ""]
    lines += [
        f"| scenario | method | ours (mean of {len(b.seeds)} seeds) | paper |",
        "|---|---|---|---|",
    ]
    for sc in b.scenarios:
        for m in b.methods:
            paper_figure = PAPER.get(sc, {}).get(m)
            cell = pct(paper_figure) if paper_figure else "-"
            lines.append(f"| {sc} | {m} | {pct(avg[(sc, m)])} | {cell} |")
    per_round = mean_seconds_per_round(results)
    lines += [
        "",
        "### Time",
        "",
        f"Whole benchmark: {wall_s:.0f} s wall clock with {b.jobs} processes on this machine.",
        "",
    ]
    lines += ["| method | seconds per round (10 sites, one core) |", "|---|---|"]
    lines += [f"| {m} | {s:.3f} |" for m, s in per_round.items()]
    for sc in b.scenarios:
        lines += [
            "",
            f"### {sc}: accuracy per site (%, mean ± std over seeds)",
            "",
            scenario_table(records, sc, "accuracy"),
        ]
        lines += ["", f"![{sc}](synthetic_{sc}.png)"]
        scores = {
            m: {k: v / 100.0 for k, v in site_means(records, sc, m).items()} for m in b.methods
        }
        lines += [
            "",
            f"#### {sc}: equity",
            "",
            "Each site's gain over its local model (Individual), the worst-served site (the one "
            "whose local model is weakest) and the spread of accuracy across sites, per method.",
            "",
            equity_markdown(equity(scores, "individual"), "accuracy"),
        ]
    lines += ["", TRIED]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data-root", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument(
        "--paper",
        type=Path,
        default=Path("docs/results/synthetic_paper_results.json"),
        help="the paper protocol's results (bench/paper_protocol.py)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    paper = load_paper_results(args.paper)  # before the runs: a missing file fails fast
    b = config.benchmark
    runs = [Run(sc, m, s, args.data_root) for sc in b.scenarios for m in b.methods for s in b.seeds]
    start = time.perf_counter()
    with tqdm(
        total=len(runs) * config.simulation.rounds, unit="round", desc="benchmark", file=sys.stderr
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        results = run_all(runs, config, jobs=b.jobs, progress=advance)
    wall_s = time.perf_counter() - start
    records = [rec for run, res in results for rec in records_of(run, res)]
    for sc in b.scenarios:
        plot_curves(
            [(r, res) for r, res in results if r.scenario == sc],
            args.out / f"synthetic_{sc}.png",
            f"{sc}: validation accuracy per round (mean ± std over seeds)",
        )
    checks = check_targets(records, b.scenarios, wall_s)
    write_results(records, args.out / "synthetic_results.json")
    metrics = {
        "wall_seconds": round(wall_s, 1),
        "site_average_accuracy": {
            f"{sc}/{m}": round(v, 2) for (sc, m), v in averages(records).items()
        },
        "targets_met": sum(bool(c["met"]) for c in checks),
        "targets_total": len(checks),
        **paper_counts(paper),
    }
    write_atomic(args.out / "synthetic_metrics.json", json.dumps(metrics, indent=1) + "\n")
    write_atomic(args.out / "synthetic.md", render(config, records, results, checks, wall_s, paper))
    print(
        f"benchmark: {metrics['targets_met']}/{metrics['targets_total']} targets met in {wall_s:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
