"""Run methods x seeds on one synthetic scenario and collect per-site validation records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from fedmap.algorithms import build_algorithm
from fedmap.config import ExperimentConfig
from fedmap.data import SiteData, read_federation, standardise
from fedmap.simulator import SimulationResult, resolve_device, simulate
from fedmap.synthetic import NUM_SITES, generate


@dataclass(frozen=True)
class SiteRecord:
    """One line of results.json: a site's validation scores under one method and seed.

    ``metrics`` holds the task's metrics (``fedmap.metrics.METRICS``): accuracy,
    balanced_accuracy, roc_auc, auprc, brier and ece for a binary task, c_index for a survival
    task.
    """

    scenario: str
    method: str
    seed: int
    site: str
    metrics: Mapping[str, float]
    n_scored: int | None = None
    """The validation rows the metrics were computed on (None where it is not known)."""

    def metric(self, name: str) -> float:
        if name not in self.metrics:
            raise KeyError(
                f"{self.scenario}/{self.method}/{self.site} has no {name!r} "
                f"(it has {', '.join(self.metrics)})"
            )
        return float(self.metrics[name])

    @property
    def accuracy(self) -> float:
        """The binary task's primary metric."""
        return self.metric("accuracy")

    def as_dict(self) -> dict[str, object]:
        """scenario, method, seed, site, n_scored (when known), then the metrics in their
        task's order."""
        counted = {} if self.n_scored is None else {"n_scored": self.n_scored}
        return {
            "scenario": self.scenario,
            "method": self.method,
            "seed": self.seed,
            "site": self.site,
            **counted,
            **self.metrics,
        }


@dataclass(frozen=True)
class Run:
    """One (scenario, method, seed) simulation and where its data comes from."""

    scenario: str
    method: str
    seed: int
    data_root: Path | None = None
    sites: int = NUM_SITES
    """How many synthetic sites to generate (the paper's 10; ignored with data_root)."""


def federation_folder(data_root: Path, scenario: str, seed: int) -> Path:
    """``<data_root>/seed-<seed>/<scenario>``: the ``<root>/<scenario>/<site>/`` layout per seed."""
    return data_root / f"seed-{seed}" / scenario


def load_sites(run: Run, config: ExperimentConfig) -> list[SiteData]:
    """Read the sites from data_root when one is given, otherwise generate them in memory."""
    device = resolve_device(config.simulation.device)
    if run.data_root is None:
        splits = generate(run.scenario, run.seed, config.synthetic, run.sites)
    else:
        folder = federation_folder(run.data_root, run.scenario, run.seed)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: no such federation folder (write it with 'fedmap generate "
                f"--scenarios {run.scenario} --seeds {run.seed} --out {run.data_root}')"
            )
        splits = read_federation(folder)
    return [standardise(s, device) for s in splits]


def execute(
    run: Run, config: ExperimentConfig, on_round: Callable[[int], None] | None = None
) -> SimulationResult:
    algorithm = build_algorithm(run.method, config.methods.get(run.method))
    return simulate(algorithm, load_sites(run, config), config.simulation, run.seed, on_round)


def _execute_single_thread(run: Run, config: ExperimentConfig) -> SimulationResult:
    torch.set_num_threads(1)  # one process per core is faster than threads for these small models
    return execute(run, config)


def records_of(run: Run, result: SimulationResult) -> list[SiteRecord]:
    return [
        SiteRecord(run.scenario, run.method, run.seed, site, s.as_dict(), result.n_scored.get(site))
        for site, s in result.final.items()
    ]


def run_all(
    runs: Sequence[Run],
    config: ExperimentConfig,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[Run, SimulationResult]]:
    """Execute runs, in order, in-process (jobs = 1) or in a pool of jobs processes.

    progress receives the number of rounds just finished: 1 per round in-process, a whole run's
    rounds at a time with a pool.
    """
    if jobs <= 1:
        tick = None if progress is None else (lambda _round: progress(1))
        return [(r, execute(r, config, tick)) for r in runs]
    out: list[tuple[Run, SimulationResult]] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_execute_single_thread, r, config) for r in runs]
        for run, future in zip(runs, futures, strict=True):
            out.append((run, future.result()))
            if progress is not None:
                progress(config.simulation.rounds)
    return out
