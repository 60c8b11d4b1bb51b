"""``fedmap``: simulate a federation on one laptop, or write the synthetic sites to disk."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedmap.algorithms import METHODS
from fedmap.comparison import RECORD_KEYS, ComparisonRun, compare, default_variants
from fedmap.comparison import records as comparison_records
from fedmap.config import ConfigError, ExperimentConfig, load_config
from fedmap.data import Task, write_site
from fedmap.equity import equity, equity_markdown
from fedmap.experiment import Run, SiteRecord, federation_folder, records_of, run_all
from fedmap.metrics import LOWER_IS_BETTER, METRICS, PRIMARY_METRIC
from fedmap.models import MODEL_NAMES
from fedmap.protocols import (
    AUTHORS_PROTOCOLS,
    PAPER,
    PAPER_2CB8DEE,
    PROTOCOLS,
    ProtocolRun,
    as_run,
    comparison_markdown,
    protocol_records,
    run_protocol,
)
from fedmap.report import (
    METRIC_LABELS,
    clinical_markdown,
    json_numbers,
    mean_seconds_per_round,
    plot_curves,
    plot_reliability,
    summary_markdown,
    write_atomic,
    write_results,
)
from fedmap.schema import PRIORS, Federation, read_federation
from fedmap.simulator import ENGINES, SimulationResult
from fedmap.synthetic import NUM_SITES, SCENARIOS, generate


def _names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}"
        )
    return names


def _methods(text: str) -> list[str]:
    """Method names; ``fedmap-<prior>`` (gaussian, diagonal, icnn) is FedMAP with that prior, and
    the paper protocol's columns (``fedmap-samples``, ``fedmap-omega``) go with --protocol paper
    (or paper-2cb8dee)."""
    variants = dict.fromkeys((*METHODS, *(f"fedmap-{p}" for p in PRIORS), *PAPER.columns))
    return list(METHODS) if text == "all" else _names(text, list(variants), "method(s)")


PAPER_ONLY = tuple(c for c in PAPER.columns if c not in METHODS)
"""Column names only the paper protocol knows."""


def _protocol_help() -> str:
    """--protocol's help, from the protocol's own definition."""
    rows = ", ".join(f"{sc} {r.rows}" for sc, r in PAPER.rows.items())
    small = PAPER.rows["quantity-skew"].small_rows
    lr = sorted({b.training.lr for b in PAPER.columns.values()})
    batch = sorted({b.training.batch_size for b in PAPER.columns.values()})

    def shown(value: object) -> bool:  # FedMAP's input_variance=None, warm_start=True go unsaid
        return value is not None and value is not True

    columns = "; ".join(
        f"{name} ({b.method}{''.join(f' {k}={v}' for k, v in b.options.items() if shown(v))}, "
        f"{b.rounds} x {b.training.epochs} epochs)"
        for name, b in PAPER.columns.items()
    )
    return (
        "converged (default): ours, the config's generator and budget (params.yaml: every "
        "method trained to convergence; docs/results/synthetic.md). paper: the authors' public "
        "code (CambridgeCIA/FedMAP, branch Gaussian-Prior; fedmap/protocols.py names the file "
        f"and commit of each number): reports {PAPER.metric}; nuisance variance "
        f"{PAPER.synthetic.noise_var:g}; rows per site: {rows} (quantity skew's small sites "
        f"{small}); Adam, lr {', '.join(f'{x:g}' for x in lr)}, batch "
        f"{', '.join(str(x) for x in batch)}; columns {columns}. FedMAP's sigma^2 covers every "
        "layer and sites warm-start; their FedMAP weights by sample counts (fedmap-samples), "
        "fedmap-omega by omega; their FedBN is FedAvg (no BatchNorm in their MLP). With paper, "
        "--methods picks columns, --rounds and --epochs cap every column's budget (a quick "
        "check), and every column of a seed sees the same seeded sites; --config, --data-root, "
        "--engine, --model and --federation do not apply. paper-2cb8dee: the same with the "
        "settings of the authors' first runnable commit: Adam at lr 1e-3 for every column, "
        "FedProx and FedBN as FedAvg, Individual on the federated 20 x 50 epochs."
    )


def simulate_federation(args: argparse.Namespace) -> int:
    """``fedmap simulate --federation FILE``: the file's tier-1 sites, in this process."""
    spec = read_federation(args.federation)
    methods = args.methods if args.methods_given else ["fedmap", "individual"]
    seeds = args.seeds if args.seeds_given else [spec.algorithm.seed]
    if args.rounds is not None:
        spec = replace(spec, algorithm=replace(spec.algorithm, rounds=args.rounds))
    model = args.model or spec.task.model
    equity_metric = _equity_metric(args.equity_metric, spec.task.recipe.type)
    runs = [ComparisonRun(v, model, s) for v in default_variants(methods) for s in seeds]
    if args.engine == "batched":
        _check_federation_batched(spec, runs)
    print(
        f"simulating {spec.name} ({len(spec.tier(1))} tier-1 sites, {spec.task.recipe.type}, "
        f"{args.engine or 'loop'} engine): "
        f"{len(methods)} method(s) x {len(seeds)} seed(s), {spec.algorithm.rounds} rounds each",
        file=sys.stderr,
    )
    with tqdm(total=len(runs), unit="run", desc=spec.name, file=sys.stderr) as bar:
        results = compare(
            spec,
            runs,
            args.jobs,
            args.device or "cpu",
            lambda _r: _tick(bar),
            args.engine or "loop",
        )
    out: Path = args.out
    rows = comparison_records(spec, results)
    text = json.dumps(json_numbers(rows), indent=1, allow_nan=False)
    write_atomic(out / "results.json", text + "\n")
    as_runs = [(Run(spec.name, r.variant.name, r.seed), res) for r, res in results]
    site_records = [
        SiteRecord(spec.name, row["method"], row["seed"], row["site"], _metrics(row))
        for row in rows
    ]
    summary = summary_markdown(site_records, mean_seconds_per_round(as_runs))
    if clinical := clinical_markdown(site_records):
        summary += "\n" + clinical
    if "individual" in methods:
        summary += "\n## equity\n\n" + federation_equity(rows, equity_metric)
    write_atomic(out / "summary.md", f"# {spec.name}\n\n" + summary)
    plot_curves(as_runs, out / "curves.png", f"{spec.name}: validation score per round")
    _write_plots(as_runs, out, spec.name)
    return 0


def _write_plots(results: Sequence[tuple[Run, SimulationResult]], out: Path, name: str) -> None:
    """reliability.png beside curves.png for a binary task, then name what was written."""
    written = [out / "results.json", out / "summary.md", out / "curves.png"]
    if any(res.reliability for _, res in results):
        plot_reliability(
            results, out / "reliability.png", f"{name}: reliability of the final models"
        )
        written.append(out / "reliability.png")
    print(
        f"wrote {', '.join(str(p) for p in written[:-1])} and {written[-1]}",
        file=sys.stderr,
    )


def _equity_metric(name: str | None, task: Task) -> str:
    """--equity-metric: one of the task's metrics (default: its primary metric)."""
    if name is None:
        return PRIMARY_METRIC[task]
    if name not in METRICS[task]:
        raise ConfigError(
            f"--equity-metric {name!r} is not a metric of a {task} task; choose from "
            f"{', '.join(METRICS[task])}"
        )
    return name


def _check_federation_batched(spec: Federation, runs: Sequence[ComparisonRun]) -> None:
    """Every run's method and model on the batched engine, before any run starts."""
    from fedmap.batched import NotBatched, check
    from fedmap.comparison import algorithm_for

    for run in runs:
        try:
            check(algorithm_for(spec, run), run.model)
        except NotBatched as exc:
            raise ConfigError(str(exc)) from None


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k not in RECORD_KEYS}


def federation_equity(rows: Sequence[dict[str, Any]], metric: str | None = None) -> str:
    """Each site's gain over Individual in metric (default: the task's primary metric), per
    method (mean over seeds); for a lower-is-better metric (Brier, ECE) a gain is a decrease."""
    task: Task = "survival" if "c_index" in rows[0] else "binary"
    metric = _equity_metric(metric, task)
    per: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        per.setdefault(r["method"], {}).setdefault(r["site"], []).append(float(r[metric]))
    scores = {m: {s: statistics.fmean(v) for s, v in d.items()} for m, d in per.items()}
    return equity_markdown(
        equity(scores, "individual", metric in LOWER_IS_BETTER),
        METRIC_LABELS.get(metric, metric),
        100.0 if metric == "accuracy" else 1.0,
    )


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers separated by commas: {text!r}"
        ) from exc
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. --seeds 0,1,2")
    return seeds


def _config(args: argparse.Namespace) -> ExperimentConfig:
    config = load_config(args.config)
    simulation = config.simulation
    if getattr(args, "rounds", None) is not None:
        simulation = replace(simulation, rounds=args.rounds)
    if getattr(args, "epochs", None) is not None:
        simulation = replace(simulation, training=replace(simulation.training, epochs=args.epochs))
    if getattr(args, "device", None) is not None:
        simulation = replace(simulation, device=args.device)
    if getattr(args, "engine", None) is not None:
        simulation = replace(simulation, engine=args.engine)
    return replace(config, simulation=simulation)


def simulate_paper(args: argparse.Namespace) -> int:
    """``fedmap simulate --protocol paper`` (or ``paper-2cb8dee``): a reading of the authors' code
    (``fedmap.protocols.AUTHORS_PROTOCOLS``)."""
    flag = f"--protocol {args.protocol}"
    given = {
        "--federation": args.federation,
        "--config": args.config,
        "--data-root": args.data_root,
        "--engine": args.engine,
        "--model": args.model,
        "--equity-metric": args.equity_metric,
    }
    clashing = [flag for flag, value in given.items() if value is not None]
    if clashing:
        raise ConfigError(
            f"{flag} sets its own sites, budgets and engine; drop {', '.join(clashing)}"
        )
    if args.scenario is None:
        raise ConfigError(f"{flag} needs --scenario")
    protocol = AUTHORS_PROTOCOLS[args.protocol].capped(args.rounds, args.epochs)
    columns = args.methods if args.methods_given else list(protocol.columns)
    unknown = [c for c in columns if c not in protocol.columns]
    if unknown:
        raise ConfigError(
            f"{flag} has no column(s) {', '.join(unknown)}; "
            f"choose from {', '.join(protocol.columns)}"
        )
    if args.sites is not None and args.sites < 1:
        raise ConfigError(f"--sites must be at least 1, got {args.sites}")
    sites = args.sites or NUM_SITES
    runs = [ProtocolRun(args.scenario, c, s, sites) for c in columns for s in args.seeds]
    print(
        f"simulating {args.scenario} under the authors' protocol {protocol.name} ({sites} sites): "
        f"{len(columns)} column(s) x {len(args.seeds)} seed(s), {args.jobs} process(es)",
        file=sys.stderr,
    )
    with tqdm(total=len(runs), unit="run", desc=args.scenario, file=sys.stderr) as bar:
        results = run_protocol(
            protocol, runs, args.jobs, args.device or "cpu", lambda _r: _tick(bar)
        )
    records = protocol_records(results)
    as_runs = [(as_run(r), res) for r, res in results]
    out: Path = args.out
    write_results(records, out / "results.json")
    table = comparison_markdown(protocol, records)
    rows = protocol.rows[args.scenario]
    header = [
        f"# {args.scenario}: the authors' protocol (fedmap simulate {flag})",
        "",
        f"Reported metric: {protocol.metric}, the site average over each site's validation "
        f"split. Generator: {protocol.synthetic}, {rows.rows} rows per site"
        + (f" ({rows.small_rows} at the small sites)" if args.scenario == "quantity-skew" else "")
        + ". Columns (fedmap/protocols.py):",
        "",
        *[f"- {line}" for line in protocol.describe() if line.split(":")[0] in columns],
        "",
        table,
    ]
    summary = "\n".join(header) + "\n" + summary_markdown(records, mean_seconds_per_round(as_runs))
    write_atomic(out / "summary.md", summary)
    plot_curves(as_runs, out / "curves.png", f"{args.scenario}: the authors' protocol, per round")
    _write_plots(as_runs, out, args.scenario)
    print(table, end="")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.protocol in AUTHORS_PROTOCOLS:
        return simulate_paper(args)
    paper_only = [m for m in args.methods if m in PAPER_ONLY]
    if paper_only:
        raise ConfigError(
            f"{', '.join(paper_only)}: columns of --protocol paper (or paper-2cb8dee) only"
        )
    if args.sites is not None and (args.federation is not None or args.data_root is not None):
        raise ConfigError(
            "--sites sets how many synthetic sites to generate; a federation file or "
            "--data-root brings its own sites"
        )
    if args.sites is not None and args.sites < 1:
        raise ConfigError(f"--sites must be at least 1, got {args.sites}")
    if args.federation is not None:
        if args.epochs is not None:
            raise ConfigError("--epochs goes with --scenario (a federation file sets its own)")
        return simulate_federation(args)
    if args.scenario is None:
        raise ConfigError("give --scenario (synthetic) or --federation FILE")
    if args.equity_metric is not None:
        raise ConfigError(
            "--equity-metric goes with --federation (a --scenario run writes no equity report)"
        )
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}"
        )
    config = _config(args)
    if config.simulation.engine == "batched":
        args.methods = _batched_only(args.methods, args.methods_given, config)
    sites = args.sites or NUM_SITES
    runs = [
        Run(args.scenario, m, s, args.data_root, sites) for m in args.methods for s in args.seeds
    ]
    total = len(runs) * config.simulation.rounds
    print(
        f"simulating {args.scenario} ({'' if args.data_root else f'{sites} sites, '}"
        f"{config.simulation.engine} engine): {len(args.methods)} method(s) x "
        f"{len(args.seeds)} seed(s), {config.simulation.rounds} rounds each, "
        f"{args.jobs} process(es)",
        file=sys.stderr,
    )
    with tqdm(total=total, unit="round", desc=args.scenario, file=sys.stderr) as bar:

        def advance(rounds_done: int) -> None:
            bar.update(rounds_done)

        results = run_all(runs, config, jobs=args.jobs, progress=advance)
    records = [rec for run, res in results for rec in records_of(run, res)]
    out: Path = args.out
    write_results(records, out / "results.json")
    summary = summary_markdown(records, mean_seconds_per_round(results))
    if clinical := clinical_markdown(records):
        summary += "\n" + clinical
    write_atomic(out / "summary.md", f"# {args.scenario}\n\n" + summary)
    plot_curves(results, out / "curves.png", f"{args.scenario}: validation accuracy per round")
    _write_plots(results, out, args.scenario)
    return 0


def _batched_only(methods: list[str], given: bool, config: ExperimentConfig) -> list[str]:
    """The methods the batched engine can run. A method it cannot run is an error when named on
    the command line, and left out with a notice when it came from the default list."""
    from fedmap.algorithms import build_algorithm
    from fedmap.batched import NotBatched, check

    kept, refused = [], []
    for method in methods:
        try:
            check(build_algorithm(method, config.methods.get(method)), config.simulation.model)
            kept.append(method)
        except NotBatched as exc:
            refused.append(str(exc))
    if refused and given:
        raise ConfigError("; ".join(refused))
    if refused:
        print(f"fedmap: notice: {'; '.join(refused)}; running the others", file=sys.stderr)
    if not kept:
        raise ConfigError("the batched engine can run none of these methods (use --engine loop)")
    return kept


def cmd_generate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for seed in args.seeds if args.seeds is not None else config.benchmark.seeds:
        for scenario in args.scenarios:
            root = federation_folder(args.out, scenario, seed)
            for split in generate(scenario, seed, config.synthetic, args.sites):
                write_site(split, root)
            print(f"wrote {root}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmap",
        description="FedMAP: personalised federated learning by MAP estimation under a learned prior.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="run methods on a synthetic or a real federation in this process",
        description="Run every method x seed on one scenario of the paper's synthetic federation "
        "(10 sites, or --sites N), or on the tier-1 sites of a federation file (--federation), and write "
        "DIR/results.json, DIR/summary.md and DIR/curves.png (and DIR/reliability.png for a binary "
        "task). --protocol paper (or paper-2cb8dee) runs a scenario under the authors' own "
        "protocol instead of ours.",
    )
    what = sim.add_mutually_exclusive_group(required=True)
    what.add_argument("--scenario", choices=SCENARIOS, help="a synthetic scenario")
    what.add_argument(
        "--federation",
        type=Path,
        help="a federation file (federations/<name>.yaml): its task, algorithm and site folders",
    )
    sim.add_argument(
        "--methods",
        type=_methods,
        default=list(METHODS),
        help=f"comma-separated, or 'all' (default): {','.join(METHODS)}; with --federation also "
        "fedmap-gaussian, fedmap-diagonal, fedmap-icnn (default there: fedmap,individual); with "
        f"--protocol paper its columns (default there: all): {','.join(PAPER.columns)}; with "
        f"paper-2cb8dee: {','.join(PAPER_2CB8DEE.columns)}",
    )
    sim.add_argument(
        "--seeds",
        type=_seeds,
        default=[0],
        help="comma-separated seeds (default: 0; with --federation: the file's algorithm.seed)",
    )
    sim.add_argument("--protocol", choices=PROTOCOLS, default="converged", help=_protocol_help())
    sim.add_argument("--model", choices=MODEL_NAMES, help="with --federation: overrides task.model")
    sim.add_argument(
        "--rounds",
        type=int,
        help="communication rounds (default: from the config; with --protocol paper: caps "
        "every column's)",
    )
    sim.add_argument(
        "--epochs",
        type=int,
        help="synthetic scenarios: local epochs per round (default: from the config; with "
        "--protocol paper: caps every column's)",
    )
    sim.add_argument("--out", type=Path, required=True, help="output folder DIR")
    sim.add_argument("--config", type=Path, help="YAML config (default: the embedded defaults)")
    sim.add_argument(
        "--data-root",
        type=Path,
        help="read sites from DATA_ROOT/seed-<s>/<scenario>/<site>/ (as written by 'fedmap generate') "
        "instead of generating them in memory",
    )
    sim.add_argument("--jobs", type=int, default=1, help="parallel processes (default: 1)")
    sim.add_argument("--device", help="cpu, cuda, or auto (default: from the config)")
    sim.add_argument(
        "--engine",
        choices=ENGINES,
        help="loop: one local update per site (every method; the default); batched: every site "
        "of a round in one vmapped computation, far faster with many sites (fedmap, individual, "
        "fedavg, fedprox, fedavg-ft, fedper, ditto; docs/results/simulator.md)",
    )
    sim.add_argument(
        "--sites",
        type=int,
        help=f"synthetic scenarios: N sites with the same skew pattern, the second half skewed "
        f"(default: the paper's {NUM_SITES})",
    )
    sim.add_argument(
        "--equity-metric",
        metavar="NAME",
        help="with --federation: the metric of the equity report (default: the task's primary "
        f"metric); binary: {', '.join(METRICS['binary'])} (brier and ece: lower is better, so a "
        f"gain is a decrease); survival: {', '.join(METRICS['survival'])}",
    )
    sim.set_defaults(func=cmd_simulate)

    gen = sub.add_parser(
        "generate",
        help="write the synthetic sites to disk, one folder per site",
        description="Write OUT/seed-<s>/<scenario>/<site>/train.csv and val.csv (70/30 split).",
    )
    gen.add_argument(
        "--scenarios", type=lambda t: _names(t, SCENARIOS, "scenario(s)"), default=list(SCENARIOS)
    )
    gen.add_argument(
        "--seeds", type=_seeds, help="comma-separated seeds (default: the config's benchmark.seeds)"
    )
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument(
        "--sites", type=int, default=NUM_SITES, help=f"sites per scenario (default: {NUM_SITES})"
    )
    gen.add_argument("--config", type=Path, help="YAML config (its 'synthetic' section is used)")
    gen.set_defaults(func=cmd_generate)

    priv = sub.add_parser(
        "privacy",
        help="epsilon of a DP plan, or the noise a budget needs (before anyone trains)",
        description="Client-level differential privacy of a plan (docs/privacy.md): with "
        "--noise-multiplier, the epsilon(delta) that T rounds spend; with --epsilon, the noise "
        "multiplier that fits T rounds into that budget. One round is one Gaussian mechanism "
        "per --mechanisms (2 under privacy.weights: omega). Accounting by Opacus (RDP, PRV).",
    )
    goal = priv.add_mutually_exclusive_group(required=True)
    goal.add_argument("--noise-multiplier", type=float, help="z: noise std / clipping norm")
    goal.add_argument("--epsilon", type=float, help="the budget: print the z it needs")
    priv.add_argument("--rounds", type=int, required=True, help="T: rounds (steps) of the plan")
    priv.add_argument(
        "--sample-rate",
        type=float,
        default=1.0,
        help="q: each site's chance to take part in a "
        "round (default 1: every site every round, as a deployed federation runs)",
    )
    priv.add_argument("--delta", type=float, default=1e-5, help="delta (default 1e-5)")
    priv.add_argument(
        "--mechanisms",
        type=int,
        default=1,
        choices=range(1, 9),
        metavar="M",
        help="Gaussian mechanisms of multiplier z per round, i.e. the squared sensitivity in "
        "units of C (default 1: a site against a null release, equal weights; 2 with "
        "privacy.weights omega; 4, or 5 with omega, for one record replaced)",
    )
    priv.add_argument("--accountant", choices=("rdp", "prv", "both"), default="both")
    priv.set_defaults(func=cmd_privacy)
    return parser


def cmd_privacy(args: argparse.Namespace) -> int:
    """Print the plan's epsilon (or its noise), as a table a governance officer can read."""
    from fedmap.privacy import Spent, epsilon, noise_for

    if args.rounds < 1 or not 0 < args.sample_rate <= 1 or not 0 < args.delta < 1:
        raise ValueError("--rounds must be >= 1, --sample-rate in (0, 1], --delta in (0, 1)")
    names = ["rdp", "prv"] if args.accountant == "both" else [args.accountant]
    plan = f"T = {args.rounds}, q = {args.sample_rate:g}, delta = {args.delta:g}"
    if args.epsilon is not None:
        if args.epsilon <= 0:
            raise ValueError("--epsilon must be positive")
        print(f"noise multiplier for epsilon = {args.epsilon:g} ({plan}):")
        for name in names:
            z = noise_for(
                args.epsilon, args.delta, args.rounds, args.sample_rate, name, args.mechanisms
            )
            print(f"  {name}: z = {z:.4f}")
        return 0
    z = args.noise_multiplier
    if z <= 0:
        raise ValueError("--noise-multiplier must be positive")
    print(f"epsilon of z = {z:g} ({plan}, {args.mechanisms} mechanism(s) per round):")
    marks = sorted({1, max(1, args.rounds // 4), max(1, args.rounds // 2), args.rounds})
    print("| rounds | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for t in marks:
        spent = [Spent(t, z, args.mechanisms, args.sample_rate)]
        cells = " | ".join(f"{epsilon(spent, args.delta, n):.4f}" for n in names)
        print(f"| {t} | {cells} |")
    return 0


def _tick(bar: tqdm[Any]) -> None:
    bar.update()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.methods_given = "--methods" in argv or any(a.startswith("--methods=") for a in argv)
    args.seeds_given = "--seeds" in argv or any(a.startswith("--seeds=") for a in argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fedmap: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
