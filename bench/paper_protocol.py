"""Benchmark: the authors' protocol (``fedmap.protocols.PAPER``) on the synthetic federation.

Runs every column of the protocol on every scenario and seed, plus what tells the paper's margin
apart: Individual on FedMAP's budget (``individual-matched``: 20 rounds x 50 epochs, Adam
restarted each round as at FedMAP's sites), FedBN as its paper defines it on the MLP with
BatchNorm (``fedbn-batchnorm``), for the columns of ``ablation_columns`` the same runs at
appendix B.1's nuisance variance, and for those of ``columns_2cb8dee`` the settings of the
authors' first runnable commit (``<column> @2cb8dee``, lr 1e-3). Writes

- docs/results/synthetic_paper_results.json: the protocol, per-site records of every run, the
  learning curves (site-mean accuracy after each round), and timings;
- docs/results/synthetic_paper_metrics.json: DVC metrics (site averages and timings; how many
  of the paper's cells lie within 3 pp is ``bench/synthetic.py``'s, in synthetic_metrics.json);
- docs/results/synthetic_budget.png: accuracy against local epochs, Individual and FedMAP.

``bench/synthetic.py`` sets these beside the converged protocol on docs/results/synthetic.md
(``bench.paper_report.paper_section``); the columns and record names are
``bench.paper_readings``'s. Run through ``dvc repro paper_protocol``
(``python -m bench.paper_protocol``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from bench.paper_readings import (
    FEDMAP,
    FEDMAP_OMEGA,
    MATCHED,
    PaperResults,
    at_2cb8dee,
    bench_protocol,
    noise_label,
    protocol_2cb8dee,
)
from fedmap.config import from_mapping
from fedmap.protocols import (
    PAPER,
    PAPER_2CB8DEE,
    PAPER_TABLES,
    EvaluationProtocol,
    ProtocolRun,
    protocol_records,
    run_protocol,
    seed_summary,
)
from fedmap.report import json_numbers, write_atomic
from fedmap.simulator import SimulationResult
from fedmap.synthetic import SCENARIOS

TIME_BUDGET_S = 15 * 60


@dataclass(frozen=True)
class PaperBenchConfig:
    """params.yaml's ``paper_protocol`` section."""

    scenarios: tuple[str, ...] = SCENARIOS
    seeds: tuple[int, ...] = (0, 1, 2)
    jobs: int = 2
    ablation_noise_var: float = 2.0
    """Appendix B.1's nuisance variance (the authors' code: 9)."""
    ablation_columns: tuple[str, ...] = (MATCHED, FEDMAP)
    columns_2cb8dee: tuple[str, ...] = tuple(PAPER_2CB8DEE.columns)
    """Columns of ``fedmap.protocols.PAPER_2CB8DEE`` to run as well (recorded as ``<column>
    @2cb8dee``)."""


def curves_of(
    results: Sequence[tuple[ProtocolRun, SimulationResult]], protocol: EvaluationProtocol
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """scenario -> column -> epochs, and the mean and std over seeds of the site-mean accuracy
    (%) after each round, for every column of more than one round."""
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for run, res in results:
        if protocol.columns[run.column].rounds > 1:
            row = [100.0 * statistics.fmean(sites) for sites in res.history]
            runs.setdefault((run.scenario, run.column), []).append(row)
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (scenario, column), rows in runs.items():
        stack = np.asarray(rows)
        per_round = protocol.columns[column].training.epochs
        out.setdefault(scenario, {})[column] = {
            "epochs": [per_round * (t + 1) for t in range(stack.shape[1])],
            "mean": stack.mean(axis=0).round(3).tolist(),
            "std": stack.std(axis=0).round(3).tolist(),
        }
    return out


def plot_budget(paper: PaperResults, path: Path) -> None:
    """One panel per scenario: site-mean validation accuracy against local epochs per site, for
    Individual on FedMAP's budget and both FedMAP columns (mean ± std over seeds), the protocol's
    10-epoch Individual, the final balanced accuracies, and the paper's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = seed_summary(paper.records, "accuracy")
    balanced = seed_summary(paper.records, "balanced_accuracy")
    scenarios = list(paper.curves)
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.0 * len(scenarios), 4.2), squeeze=False)
    styles = {MATCHED: ("Individual, FedMAP's budget", "C0", "-"),
              FEDMAP: ("FedMAP, sample weights", "C3", "-"),
              FEDMAP_OMEGA: ("FedMAP, omega weights", "C1", "--"),
              at_2cb8dee("individual"): ("Individual, 2cb8dee (lr 1e-3)", "C9", "-."),
              at_2cb8dee(FEDMAP): ("FedMAP, 2cb8dee (lr 1e-3)", "C6", "-.")}  # fmt: skip
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        last = 0
        for column, (label, colour, dash) in styles.items():
            curve = paper.curves[scenario].get(column)
            if curve is None:
                continue
            x, mean, std = (np.asarray(curve[k]) for k in ("epochs", "mean", "std"))
            ax.plot(x, mean, dash, color=colour, label=label, lw=1.4)
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
            ax.plot([x[-1]], [balanced[(scenario, column)][0]], "^", color=colour, ms=7)
            last = int(x[-1])
        epochs = PAPER.columns["individual"].local_epochs
        ax.plot([epochs], [accuracy[(scenario, "individual")][0]], "o", color="C0", ms=7,
                label=f"Individual, the code's {epochs} epochs")  # fmt: skip
        ax.plot([epochs], [balanced[(scenario, "individual")][0]], "^", color="C0", ms=7)
        for method, colour in (("individual", "C0"), ("fedmap", "C3")):
            ax.axhline(PAPER_TABLES[scenario][method], color=colour, ls=":", lw=1.2)
            ax.annotate(f"paper {method}", (last / 2, PAPER_TABLES[scenario][method]),
                        ha="center", va="bottom", fontsize=7, color=colour)  # fmt: skip
        ax.set_title(scenario)
        ax.set_xlabel("local epochs per site (Adam, lr 1e-4; 2cb8dee: 1e-3)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("site-mean validation accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, fontsize=8)
    fig.suptitle(
        "The authors' protocol: accuracy against training budget (mean ± std over seeds; "
        "triangles: balanced accuracy at the end; dotted: the paper, balanced accuracy)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.11, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text()) or {}
    config = from_mapping(PaperBenchConfig, raw.get("paper_protocol"), "paper_protocol")
    protocol = bench_protocol()
    noisy = replace(
        protocol,
        name=f"paper, noise {config.ablation_noise_var:g}",
        synthetic=replace(protocol.synthetic, noise_var=config.ablation_noise_var),
    )
    # longest first, so that the two processes finish together
    order = sorted(protocol.columns, key=lambda c: -protocol.columns[c].local_epochs)
    runs = [ProtocolRun(sc, c, s) for c in order for sc in config.scenarios for s in config.seeds]
    ablation = [
        ProtocolRun(sc, c, s)
        for c in config.ablation_columns
        for sc in config.scenarios
        for s in config.seeds
    ]
    early = protocol_2cb8dee()
    runs_2cb8dee = [
        ProtocolRun(sc, at_2cb8dee(c), s)
        for c in config.columns_2cb8dee
        for sc in config.scenarios
        for s in config.seeds
    ]
    start = time.perf_counter()
    total = len(runs) + len(ablation) + len(runs_2cb8dee)
    with tqdm(total=total, unit="run", desc="paper", file=sys.stderr) as bar:

        def tick(_run: ProtocolRun) -> None:
            bar.update()

        results = run_protocol(protocol, runs, config.jobs, progress=tick)
        noise_results = run_protocol(noisy, ablation, config.jobs, progress=tick)
        results_2cb8dee = run_protocol(early, runs_2cb8dee, config.jobs, progress=tick)
    wall_s = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = children.ru_utime + children.ru_stime
    v = config.ablation_noise_var
    records = (
        protocol_records(results)
        + [replace(r, method=noise_label(r.method, v)) for r in protocol_records(noise_results)]
        + protocol_records(results_2cb8dee)
    )
    per_round: dict[str, list[float]] = {}
    for run, res in [*results, *results_2cb8dee]:
        per_round.setdefault(run.column, []).append(res.seconds_per_round)
    curves = curves_of(results, protocol)
    for scenario, by_column in curves_of(results_2cb8dee, early).items():
        curves.setdefault(scenario, {}).update(by_column)
    paper = PaperResults(
        records,
        curves,
        protocol.describe() + early.describe(),
        list(config.seeds),
        v,
        wall_s,
        {k: statistics.fmean(x) for k, x in per_round.items()},
        cpu_s,
    )
    text = json.dumps(json_numbers(paper.as_json()), indent=1, allow_nan=False)
    write_atomic(args.out / "synthetic_paper_results.json", text + "\n")
    plot_budget(paper, args.out / "synthetic_budget.png")
    summary = seed_summary(records, PAPER.metric)
    metrics = {
        "wall_seconds": round(wall_s, 1),
        "cpu_seconds": round(cpu_s, 1),
        "site_average_balanced_accuracy": {
            f"{sc}/{c}": round(m, 2) for (sc, c), (m, _, _) in summary.items()
        },
        "wall_under_15_min": wall_s < TIME_BUDGET_S,
        "half_cpu_under_15_min": cpu_s / 2 < TIME_BUDGET_S,
    }
    write_atomic(args.out / "synthetic_paper_metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(
        f"paper protocol: {total} runs in {wall_s:.0f} s; how they compare with the paper: "
        "docs/results/synthetic.md (dvc repro benchmark_synthetic)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
