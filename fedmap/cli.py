"""``fedmap``: simulate a federation on one laptop, or write the synthetic sites to disk."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from fedmap.algorithms import METHODS
from fedmap.config import ConfigError, ExperimentConfig, load_config
from fedmap.data import write_site
from fedmap.experiment import Run, federation_folder, records_of, run_all
from fedmap.report import (
    mean_seconds_per_round,
    plot_curves,
    summary_markdown,
    write_atomic,
    write_results,
)
from fedmap.synthetic import SCENARIOS, generate


def _names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}"
        )
    return names


def _methods(text: str) -> list[str]:
    return list(METHODS) if text == "all" else _names(text, METHODS, "method(s)")


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
    if getattr(args, "device", None) is not None:
        simulation = replace(simulation, device=args.device)
    return replace(config, simulation=simulation)


def cmd_simulate(args: argparse.Namespace) -> int:
    config = _config(args)
    runs = [Run(args.scenario, m, s, args.data_root) for m in args.methods for s in args.seeds]
    total = len(runs) * config.simulation.rounds
    print(
        f"simulating {args.scenario}: {len(args.methods)} method(s) x {len(args.seeds)} seed(s), "
        f"{config.simulation.rounds} rounds each, {args.jobs} process(es)",
        file=sys.stderr,
    )
    with tqdm(total=total, unit="round", desc=args.scenario, file=sys.stderr) as bar:

        def advance(rounds_done: int) -> None:
            bar.update(rounds_done)

        results = run_all(runs, config, jobs=args.jobs, progress=advance)
    records = [rec for run, res in results for rec in records_of(run, res)]
    out: Path = args.out
    write_results(records, out / "results.json")
    write_atomic(
        out / "summary.md",
        f"# {args.scenario}\n\n" + summary_markdown(records, mean_seconds_per_round(results)),
    )
    plot_curves(results, out / "curves.png", f"{args.scenario}: validation accuracy per round")
    print(
        f"wrote {out / 'results.json'}, {out / 'summary.md'} and {out / 'curves.png'}",
        file=sys.stderr,
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for seed in args.seeds if args.seeds is not None else config.benchmark.seeds:
        for scenario in args.scenarios:
            root = federation_folder(args.out, scenario, seed)
            for split in generate(scenario, seed, config.synthetic):
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
        help="run methods on a synthetic federation in this process",
        description="Run every method x seed on one scenario of the paper's synthetic federation "
        "(10 sites) and write DIR/results.json, DIR/summary.md and DIR/curves.png.",
    )
    sim.add_argument("--scenario", required=True, choices=SCENARIOS)
    sim.add_argument(
        "--methods",
        type=_methods,
        default=list(METHODS),
        help=f"comma-separated, or 'all' (default): {','.join(METHODS)}",
    )
    sim.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default: 0)")
    sim.add_argument("--rounds", type=int, help="communication rounds (default: from the config)")
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
    gen.add_argument("--config", type=Path, help="YAML config (its 'synthetic' section is used)")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fedmap: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
