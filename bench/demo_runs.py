"""Benchmark: how reliably ``make demo`` meets its targets, over many runs of the same federation.

A demo run's outcome depends on its run id, since every site shuffles with a seed fixed by
(federation, run, site, round); two runs on the same data differ by their shuffles alone. One
``make demo`` takes minutes, so this bench replays the demo's own federation file
(``site_tasks.local.demo.federation_body``) in process, many times:

- each *pair* is a cold run (Algorithm 1's initialisation under ``algorithm.seed``, as the DAG's
  ``start``) and then a warm run from the cold run's final prior (``fedmap.initialisation
  .warm_start``, as a second ``make demo`` starts from the champion); only the shuffles differ
  between pairs;
- tier-1 sites train in every round, tier-2 sites fine-tune the final prior for rounds x epochs
  (``finalise``'s budget);
- every site's gain is measured against the very local-only model the DAG's ``finalise`` trains
  (``site_tasks.site.finalise.local_baseline``, whose seed is fixed by federation and site).

Two differences from the DAG change only the statistics: a tier-1 site shuffles with one
generator over the run (``fedmap.simulator.site_generator``) where the DAG reseeds it each round
(``round_seed``), and every warm run starts from the cold run just before it, where a second
``make demo`` starts from the registry's champion (the same prior whenever the gate promoted it).

Both learning-rate schedules run side by side on the same shuffles: the demo's own (lr decaying
to ``lr_final`` over the rounds) and a constant lr (the demo before ``lr_final``). It writes
``docs/results/demo_runs.json`` (every site's gain in every run), ``demo_runs.md`` (the targets
met per schedule, run and site), ``demo_runs_metrics.json`` and ``demo_runs.png`` (each site's
gains, one dot per run, one panel per schedule).
Run through ``dvc repro demo_runs`` (``python -m bench.demo_runs``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from bench.demo_runs_report import MEAN_GAIN_PP, WORST_SITE_PP, write_report
from fedmap.algorithms import SiteContext
from fedmap.data import SiteData
from fedmap.initialisation import Initialisation, initialise, warm_start
from fedmap.models import build_model
from fedmap.priors import prior_mean
from fedmap.report import json_numbers, write_atomic
from fedmap.simulator import SimulationConfig, evaluate, simulate
from fedmap.tabular import load_tabular_site
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.local.demo import ROUNDS, federation_body
from site_tasks.local.demo_data import write_data
from site_tasks.site.finalise import fine_tuned, local_baseline
from site_tasks.site.train import Prepared, round_seed

Gains = dict[str, float]


def sites_of(config: FederationConfig, tier: int) -> list[SiteData]:
    """The demo's sites of one tier, read with the federation's recipe as a site reads them."""
    names = sorted(n for n, s in config.sites.items() if s.tier == tier)
    return [load_tabular_site(config.site(n).data, config.recipe, "cpu", n) for n in names]


def baselines(config: FederationConfig, sites: Sequence[SiteData]) -> dict[str, float]:
    """Each site's local-only accuracy: the model ``finalise`` trains, with its own seed."""
    out = {}
    for data in sites:
        context = SiteContext(data, _builder(config), config.training, torch.Generator())
        ready = Prepared(context, {}, {}, torch.device("cpu"))
        out[data.name] = local_baseline(config, ready, config.rounds)["accuracy"]
    return out


def _builder(config: FederationConfig) -> Any:
    return lambda: build_model(config.model.name, config.model.n_features)


def fine_tune(
    config: FederationConfig, prior: Mapping[str, torch.Tensor], data: SiteData, run: str
) -> float:
    """A tier-2 site's accuracy after ``finalise``'s fine-tuning (``fine_tuned``) from the final
    prior's mean, with the generator its ``prepare`` gives it in that run."""
    in_run = replace(config, run=run)
    seed = round_seed(in_run, data.name, config.rounds + 1)  # the generator prepare gives it
    context = SiteContext(
        data, _builder(config), config.training, torch.Generator().manual_seed(seed)
    )
    ready = Prepared(context, dict(prior), prior_mean(dict(prior)), torch.device("cpu"))
    return evaluate(context, fine_tuned(in_run, data.name, config.rounds, ready).personal).primary


def one_run(
    config: FederationConfig,
    tier1: Sequence[SiteData],
    tier2: Sequence[SiteData],
    start: Initialisation,
    shuffle_seed: int,
    run: str,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every tier-1 and tier-2 site's FedMAP accuracy in one run, and the run's final prior."""
    simulation = SimulationConfig(config.rounds, config.model.name, config.training)
    result = simulate(config.method, tier1, simulation, shuffle_seed, start=start)
    accuracy = {name: scores.primary for name, scores in result.final.items()}
    for data in tier2:
        accuracy[data.name] = fine_tune(config, result.prior, data, run)
    return accuracy, result.prior


def gains_of(accuracy: Mapping[str, float], base: Mapping[str, float]) -> Gains:
    """gain_k = 100 (accuracy_k - local-only_k), in percentage points."""
    return {name: 100.0 * (accuracy[name] - base[name]) for name in sorted(accuracy)}


def verdict(gains: Gains) -> dict[str, Any]:
    """One run against the demo's targets: the mean gain, the worst site and whether each holds."""
    worst = min(gains, key=lambda name: gains[name])
    mean = statistics.mean(gains.values())
    return {
        "mean_gain_pp": mean,
        "worst_site": worst,
        "worst_gain_pp": gains[worst],
        "mean_met": mean >= MEAN_GAIN_PP,
        "worst_met": gains[worst] >= WORST_SITE_PP,
    }


SCHEDULES = ("demo", "constant")
"""demo: the file's learning rate, decaying from lr to lr_final over the rounds; constant: lr
in every round (the demo before ``lr_final``), side by side on the same shuffles."""


def with_schedule(config: FederationConfig, schedule: str) -> FederationConfig:
    """The demo's federation under one of SCHEDULES."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "demo":
        return config
    return replace(config, training=replace(config.training, lr_final=None))


def run_pairs(config: FederationConfig, pairs: int) -> dict[str, Any]:
    """``pairs`` cold runs, each followed by a warm run from its final prior."""
    tier1, tier2 = sites_of(config, 1), sites_of(config, 2)
    base = baselines(config, [*tier1, *tier2])
    cold_start = initialise(_builder(config), sorted(config.sites), config.seed)
    names = [s.name for s in tier1]
    records = []
    began = time.perf_counter()
    final = config.training.lr_final
    label = f"lr {config.training.lr} " + ("constant" if final is None else f"-> {final}")
    for pair in tqdm(range(1, pairs + 1), desc=f"demo runs, {label}", unit="pair"):
        cold, prior = one_run(config, tier1, tier2, cold_start, pair, f"cold-{pair}")
        warm, _ = one_run(
            config, tier1, tier2, warm_start(prior, names), 10_000 + pair, f"warm-{pair}"
        )
        for kind, accuracy in (("cold", cold), ("warm", warm)):
            gains = gains_of(accuracy, base)
            records.append({"pair": pair, "run": kind, "gains_pp": gains, **verdict(gains)})
    return {
        "federation": config.name,
        "rounds": config.rounds,
        "lr": config.training.lr,
        "lr_final": config.training.lr_final,
        "pairs": pairs,
        "local_only_accuracy": base,
        "records": records,
        "seconds": time.perf_counter() - began,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_runs",
        description="Replay make demo's federation in process over many run seeds (cold and "
        "warm runs) and report how often it meets its targets: tiers 1-2 mean gain >= "
        f"{MEAN_GAIN_PP:+.0f} pp, no site below {WORST_SITE_PP:+.0f} pp, warm no worse than cold.",
    )
    parser.add_argument("--pairs", type=int, default=20, help="cold + warm run pairs (20)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds ({ROUNDS})")
    parser.add_argument("--seed", type=int, default=0, help="the demo's data and model seed (0)")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fedmap-demo-runs-") as tmp:
        data = Path(tmp) / "data"
        write_data(data, args.seed)
        path = Path(tmp) / "demo.yaml"
        body = federation_body(Path(tmp), args.rounds, args.seed, data)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        config = load_federation(path, deployed=False)
        result = {
            "schedules": {
                name: run_pairs(with_schedule(config, name), args.pairs) for name in SCHEDULES
            }
        }
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_numbers(result), indent=1, allow_nan=False) + "\n"
    write_atomic(args.out / "demo_runs.json", text)
    print(write_report(result["schedules"], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
