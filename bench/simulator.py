"""The simulator at the paper's scale: seconds per round against sites for the loop and the
batched engine, the FLOP-bound floor, and Flower's simulation engine, measured in one run.

Every size is the synthetic label-skew scenario with N sites (``fedmap simulate --sites N``:
sites 1..N/2 balanced, the rest 85% class 0), the MLP, one local epoch of minibatch Adam (batch 64,
lr 1e-2), and each round includes the validation scores the simulator records. At each size the
loop and the batched engine run next to each other, so they share the machine's load; Flower runs
FedAvg on the same sites, seeds and local step in its own venv (``make flower``, never a dependency
of the project) through ``bench/flower_fedavg.py``. The floor is the round's floating-point work
over the machine's measured dense-matmul throughput. A check at 10 sites runs every method both
ways over the full budget and compares the accuracies. Writes ``<out>/simulator.md``,
``simulator.json``, ``simulator_metrics.json`` and ``simulator.png``; run by ``dvc repro simulator``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from bench.simulator_report import metrics_of, page, plot
from fedmap.algorithms import build_algorithm
from fedmap.data import SiteData, standardise
from fedmap.models import build_model
from fedmap.report import write_atomic
from fedmap.simulator import SimulationConfig, SimulationResult, simulate
from fedmap.synthetic import generate

ROOT = Path(__file__).resolve().parent.parent
FLOWER_PYTHON = ROOT / ".state" / "flower" / "bin" / "python"


def log(text: str) -> None:
    print(f"[simulator] {text}", file=sys.stderr, flush=True)


def layer_macs(model: nn.Module) -> list[int]:
    """Multiply-adds of one forward pass of one row, per Linear layer in forward order."""
    return [m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)]


def macs_per_row(model: nn.Module) -> int:
    """m: multiply-adds of one forward pass of one row, summed over the Linear layers."""
    return sum(layer_macs(model))


def round_flops(sites: list[SiteData], layers: list[int], epochs: int) -> float:
    """FLOPs of one round. Per site: epochs x N_train x (2m forward, 2m for the weight gradients,
    2(m - m_1) for the input gradients of every layer but the first, which autograd skips), the
    training NLL for omega_k (N_train x 2m) and the validation scores (N_val x 2m)."""
    m = sum(layers)
    train = 2 * m + 2 * m + 2 * (m - layers[0])
    return float(
        sum(
            epochs * s.num_train * train + s.num_train * 2 * m + len(s.y_val) * 2 * m for s in sites
        )
    )


def peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """The machine's dense float32 matmul throughput (FLOP/s), best of repeats."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def sites_of(n: int, seed: int) -> list[SiteData]:
    return [standardise(s) for s in generate("label-skew", seed, num_sites=n)]


def run(
    method: str, sites: list[SiteData], rounds: int, engine: str, seed: int
) -> SimulationResult:
    config = SimulationConfig(rounds=rounds, engine=engine)  # type: ignore[arg-type]
    return simulate(build_algorithm(method), sites, config, seed)


def flower(n: int, rounds: int, seed: int) -> dict[str, Any] | None:
    """Flower's simulation engine on the same workload, or None without its venv."""
    if not FLOWER_PYTHON.exists():
        log(f"no Flower venv at {FLOWER_PYTHON} (make flower): Flower skipped")
        return None
    cmd = [
        str(FLOWER_PYTHON),
        str(ROOT / "bench" / "flower_fedavg.py"),
        "--sites",
        str(n),
        "--rounds",
        str(rounds),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"Flower at {n} sites failed:\n{done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def scale(params: dict[str, Any], peak: float) -> list[dict[str, Any]]:
    """Loop and batched, side by side at every size and method."""
    rows = []
    seed = int(params["seed"])
    warm = sites_of(2, seed)  # the first call of each engine pays one-time costs; not measured
    for method in params["methods"]:
        for engine in ("loop", "batched"):
            run(method, warm, 1, engine, seed)
    for n in params["sites"]:
        sites = sites_of(n, seed)
        layers = layer_macs(build_model("mlp", sites[0].num_features))
        flops = round_flops(sites, layers, SimulationConfig().training.epochs)
        rounds = params["rounds"]
        for method in params["methods"]:
            times = {}
            for engine in ("loop", "batched"):
                times[engine] = run(method, sites, rounds[engine], engine, seed).seconds_per_round
            rows.append(
                {
                    "sites": n,
                    "method": method,
                    "loop": times["loop"],
                    "batched": times["batched"],
                    "flops_per_round": flops,
                    "floor": flops / peak,
                }
            )
            log(
                f"{n} sites, {method}: loop {times['loop']:.3f} s/round, batched "
                f"{times['batched']:.3f} s/round ({times['loop'] / times['batched']:.1f}x), "
                f"floor {flops / peak:.4f} s"
            )
    return rows


def skewed_sites(n: int, big: int, seed: int) -> list[SiteData]:
    """label-skew with N sites, the first of which holds ``big`` training rows (its own rows
    repeated with a little noise): one large hospital among many small ones."""
    splits = generate("label-skew", seed, num_sites=n)
    first = splits[0]
    rng = np.random.default_rng(seed)
    reps = big // first.num_train + 1
    x = np.tile(first.x_train, (reps, 1))[:big] + 0.01 * rng.standard_normal(
        (big, first.x_train.shape[1])
    )
    splits[0] = replace(first, x_train=x, y_train=np.tile(first.y_train, reps)[:big])
    return [standardise(s) for s in splits]


def skew_one(engine: str, n: int, big: int, seed: int) -> dict[str, Any]:
    """One FedAvg round on ``skewed_sites`` in this process: seconds and peak memory."""
    result = run("fedavg", skewed_sites(n, big, seed), 1, engine, seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"engine": engine, "seconds_per_round": result.seconds_per_round, "peak_mb": peak}


def skew(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Both engines on one large site among many, each in its own process (its own peak RSS)."""
    rows = []
    for engine in ("loop", "batched"):
        cmd = [
            sys.executable,
            "-m",
            "bench.simulator",
            "--skew-one",
            engine,
            "--skew-sites",
            str(params["sites"]),
            "--skew-rows",
            str(params["rows"]),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        log(
            f"skewed ({params['sites']} sites, one of {params['rows']} rows), {engine}: "
            f"{rows[-1]['seconds_per_round']:.2f} s/round, peak {rows[-1]['peak_mb']:.0f} MB"
        )
    return rows


def agreement(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every batched method over the full budget at 10 sites, both engines: mean accuracy."""
    out = []
    for seed in params["seeds"]:
        sites = sites_of(10, seed)
        for method in params["methods"]:
            acc = {}
            for engine in ("loop", "batched"):
                res = run(method, sites, params["rounds"], engine, seed)
                acc[engine] = [res.final[s]["accuracy"] for s in res.sites]
            diffs = [a - b for a, b in zip(acc["loop"], acc["batched"], strict=True)]
            out.append(
                {
                    "method": method,
                    "seed": seed,
                    "loop": statistics.fmean(acc["loop"]),
                    "batched": statistics.fmean(acc["batched"]),
                    "max_site_diff": max(abs(d) for d in diffs),
                }
            )
            log(
                f"agreement {method} seed {seed}: loop {out[-1]['loop']:.4f}, batched "
                f"{out[-1]['batched']:.4f}, largest site difference {out[-1]['max_site_diff']:.4f}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--skew-one", choices=("loop", "batched"), help=argparse.SUPPRESS)
    parser.add_argument("--skew-sites", type=int, default=400, help=argparse.SUPPRESS)
    parser.add_argument("--skew-rows", type=int, default=50_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.skew_one is not None:
        print(json.dumps(skew_one(args.skew_one, args.skew_sites, args.skew_rows, 0)))
        return 0
    params = yaml.safe_load(args.params.read_text())["simulator"]
    started = time.perf_counter()
    peak = peak_flops()
    log(f"{torch.get_num_threads()} threads, dense matmul {peak / 1e9:.1f} GFLOP/s")
    rows = scale(params, peak)
    flower_rows = []
    for n, rounds in params["flower"].items():
        got = flower(int(n), int(rounds), int(params["seed"]))
        if got is not None:
            flower_rows.append(got)
            log(
                f"Flower at {n} sites: {got['seconds_per_round']:.3f} s/round "
                f"(start-up {got.get('startup_s', float('nan')):.1f} s)"
            )
    skewed = skew(params["skew"]) if "skew" in params else []
    checks = agreement(params["agreement"])
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "peak_gflops": peak / 1e9,
        },
        "params": params,
        "scale": rows,
        "flower": flower_rows,
        "agreement": checks,
        "skew": skewed,
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "simulator.json", json.dumps(result, indent=1) + "\n")
    write_atomic(
        args.out / "simulator_metrics.json", json.dumps(metrics_of(result), indent=1) + "\n"
    )
    write_atomic(args.out / "simulator.md", page(result))
    plot(result, args.out / "simulator.png")
    log(f"wrote {args.out / 'simulator.md'} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
