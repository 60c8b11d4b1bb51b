"""What privacy costs FedMAP on FLamby's real federations: client-level differential privacy at
each epsilon, with and without CKKS secure aggregation, against the local-only model.

Every federation x epsilon x secure aggregation x seed runs FedMAP with the federation file's own
budget (``fedmap.algorithms.private.PrivateFedMAP`` under a ``privacy`` section; epsilon = inf
without secure aggregation is plain FedMAP), and every federation x seed the local-only model
(``individual``). Each run is a fresh subprocess, so its peak memory is its own; secure
aggregation on and off of one seed are submitted next to each other, so they share the machine's
load. Writes ``<out>/privacy.md``, ``privacy_results.json`` (one record per run),
``privacy_metrics.json`` (DVC metrics) and ``privacy.png``. Run through ``dvc repro privacy``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.privacy_report import CLEAR, eps_label, metrics_of, page, plot
from fedmap.algorithms import Algorithm, SiteContext, build_algorithm
from fedmap.algorithms.protocol import LocalResult, SiteUpdate
from fedmap.comparison import Variant, load_sites, options_for, private
from fedmap.params import Params
from fedmap.privacy import Privacy, plan_epsilon
from fedmap.report import write_atomic
from fedmap.schema import Federation, read_federation
from fedmap.simulator import SimulationConfig, simulate

SECURE = ("none", "ckks")


@dataclass(frozen=True)
class Config:
    """One row of the tables: FedMAP at (epsilon, secure aggregation), or the local-only model."""

    federation: str
    method: str = "fedmap"
    epsilon: float = math.inf
    secure: str = "none"
    """none, ckks, or ``CLEAR``."""
    widened: bool = True
    """False: the ablation (``PrivateFedMAP.widen``), each site's prior left at sigma^2 under DP."""

    @property
    def key(self) -> str:
        if self.method == "individual":
            return "local"
        return f"eps={eps_label(self.epsilon)}/{self.secure}" + (
            "" if self.widened else "/unwidened"
        )


@dataclass(frozen=True)
class Job:
    path: Path
    config: Config
    seed: int
    rounds: int | None = None
    """Overrides the federation file's rounds (a quick look); None: the file's own."""


def configs(
    federation: str, epsilons: Sequence[float], secure: Sequence[str], ablate: bool = True
) -> list[Config]:
    """FedMAP at every (epsilon, secure aggregation), the clear release at epsilon = inf when
    ckks is asked for, under DP the ablation without the widened prior (``ablate``), and the
    local-only model."""
    out = []
    for eps in epsilons:
        out += [Config(federation, "fedmap", eps, s) for s in secure]
        if math.isinf(eps) and "ckks" in secure:
            out.append(Config(federation, "fedmap", eps, CLEAR))
        if math.isfinite(eps) and ablate:
            out.append(Config(federation, "fedmap", eps, "none", widened=False))
    return [*out, Config(federation, "individual")]


def federation(path: Path, rounds: int | None) -> Federation:
    spec = read_federation(path)
    if rounds is None:
        return spec
    return replace(spec, algorithm=replace(spec.algorithm, rounds=rounds))


def peak_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: Job) -> dict[str, Any]:
    """One simulation, in its own process: the per-site scores and what the run cost."""
    torch.set_num_threads(1)
    spec = federation(job.path, job.rounds)
    sites = load_sites(spec)
    config = job.config
    variant = Variant(config.method, config.method)
    algorithm: Algorithm = build_algorithm(config.method, options_for(spec, variant))
    privacy = Privacy(
        epsilon=config.epsilon, secure_aggregation="ckks" if config.secure == "ckks" else "none"
    )
    dp = None
    if config.method == "fedmap" and (privacy.active or config.secure == CLEAR):
        dp = private(algorithm, replace(spec, privacy=privacy), job.seed)
        dp.widen = config.widened
        algorithm = dp
    elif config.method == "fedmap":
        algorithm = Metered(algorithm)
    baseline = peak_mb()
    sim = SimulationConfig(spec.rounds, spec.task.model, spec.algorithm.training)
    result = simulate(algorithm, sites, sim, job.seed)
    z = 0.0 if dp is None else dp.z
    sent = dp.sent_bytes if dp is not None else getattr(algorithm, "sent_bytes", 0)
    return {
        "federation": spec.name,
        "config": config.key,
        "method": config.method,
        "epsilon": eps_label(config.epsilon),
        "secure_aggregation": config.secure,
        "widened": config.widened,
        "seed": job.seed,
        "rounds": spec.rounds,
        "metric": result.metric,
        "noise_multiplier": z,
        "epsilon_spent": plan_epsilon(privacy, spec.rounds, z) if z > 0 else None,
        "weights": None if config.method != "fedmap" else privacy.weighting,
        "tau2": 0.0 if dp is None else dp.tau2,
        "seconds_per_round": result.seconds_per_round,
        "bytes_per_site_round": sent / spec.rounds / len(sites),
        "peak_mb": peak_mb(),
        "baseline_mb": baseline,
        "sites": {site: scores.as_dict() for site, scores in result.final.items()},
    }


@dataclass
class Metered:
    """Plain FedMAP, counting what its sites send: theta_k (its tensors' bytes) and log omega_k
    (8 bytes), as ``PrivateFedMAP.sent_bytes`` counts N_k and D_k."""

    inner: Algorithm
    sent_bytes: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str | None:
        return self.inner.model

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        result = self.inner.local_update(site, prior, personal, round_)
        params = result.update.params.values()
        self.sent_bytes += sum(v.numel() * v.element_size() for v in params) + 8
        return result

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        return self.inner.aggregate(updates, prior)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return self.inner.finalise(site, prior, personal)

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return self.inner.scoring_params(prior, personal)


def run_all(jobs: Sequence[Job], workers: int, bar: tqdm[Any]) -> list[dict[str, Any]]:
    """Every job in a fresh spawned process (``max_tasks_per_child=1``), results in job order."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_job, job): i for i, job in enumerate(jobs)
        }
        out: list[dict[str, Any]] = [{} for _ in jobs]
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            bar.set_postfix_str(f"{jobs[i].config.federation} {jobs[i].config.key}", refresh=False)
            bar.update()
    return out


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="A quick look: --datasets heart_disease --seeds 0 --epsilons 8,inf --rounds 2",
    )
    parser.add_argument(
        "--datasets", default="heart_disease,tcga_brca", help="comma-separated federation names"
    )
    parser.add_argument(
        "--federations", type=Path, default=Path("federations"), help="folder of <name>.yaml"
    )
    parser.add_argument("--epsilons", default="1,3,8,inf", help="comma-separated; inf: no DP")
    parser.add_argument("--secure", default="none,ckks", help="secure aggregation: none, ckks")
    parser.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="under DP, also FedMAP without the widened prior",
    )
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated")
    parser.add_argument("--rounds", type=int, help="override the files' rounds (a quick look)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at once")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args(argv)
    epsilons = floats(args.epsilons)
    secure = args.secure.split(",")
    if bad := [s for s in secure if s not in SECURE]:
        parser.error(f"--secure: unknown {', '.join(bad)} (none, ckks)")
    if any(not e > 0 for e in epsilons):
        parser.error("--epsilons must be positive (inf: no DP)")
    seeds = [int(s) for s in args.seeds.split(",")]
    paths = [args.federations / f"{name}.yaml" for name in args.datasets.split(",")]
    specs = [federation(p, args.rounds) for p in paths]
    jobs = [
        Job(path, config, seed, args.rounds)
        for path, spec in zip(paths, specs, strict=True)
        for seed in seeds
        for config in configs(spec.name, epsilons, secure, args.ablation)
    ]
    print(f"{len(jobs)} runs on {', '.join(s.name for s in specs)}", file=sys.stderr)
    start = time.perf_counter()
    with tqdm(total=len(jobs), unit="run", desc="privacy", file=sys.stderr) as bar:
        rows = run_all(jobs, args.jobs, bar)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "privacy_results.json", json.dumps(rows, indent=1) + "\n")
    metrics = json.dumps(metrics_of(rows, seconds), indent=1) + "\n"
    write_atomic(args.out / "privacy_metrics.json", metrics)
    plot(rows, args.out / "privacy.png")
    write_atomic(args.out / "privacy.md", page(rows, specs, seconds, args))
    print(f"wrote {args.out / 'privacy.md'} in {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
