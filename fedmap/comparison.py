"""Compare methods on a federation file's own data: every method x model x seed, in this process.

``fedmap simulate --federation FILE`` and the DVC benchmark stages (``bench/real.py``) run this.
Each run reads the tier-1 sites' folders with the file's ``task`` recipe, trains with the file's
``algorithm`` budget (rounds, epochs, batch size, lr) and scores every site on its own ``val.csv``.
A method variant such as ``fedmap-icnn`` is FedMAP with the file's settings and ``prior: icnn``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fedmap.algorithms import METHODS, Algorithm, FedMAP, build_algorithm
from fedmap.algorithms.private import PrivateFedMAP
from fedmap.config import ConfigError
from fedmap.data import SiteData
from fedmap.privacy import noise_multiplier
from fedmap.schema import Federation
from fedmap.simulator import (
    EngineName,
    SimulationConfig,
    SimulationResult,
    resolve_device,
    simulate,
)
from fedmap.tabular import load_tabular_site

RECORD_KEYS = ("federation", "model", "method", "seed", "site", "n_scored")
"""The keys of a record that are not metrics."""


@dataclass(frozen=True)
class Variant:
    """One column of a comparison: a method of the registry and its options."""

    name: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)


def variants_of(mapping: Mapping[str, Any]) -> tuple[Variant, ...]:
    """``{name: {method: ..., option: value}}``; a bare method name maps to itself."""
    out = []
    for name, body in mapping.items():
        body = dict(body or {})
        method = body.pop("method", name)
        if method not in METHODS:
            raise ConfigError(f"methods.{name}.method: unknown {method!r} ({', '.join(METHODS)})")
        out.append(Variant(str(name), method, body))
    return tuple(out)


def default_variants(names: Sequence[str]) -> tuple[Variant, ...]:
    """Plain method names; ``fedmap-<prior>`` is FedMAP with that prior."""
    out = []
    for name in names:
        if name.startswith("fedmap-"):
            out.append(Variant(name, "fedmap", {"prior": name.removeprefix("fedmap-")}))
        else:
            out.append(Variant(name, name))
    return tuple(out)


@dataclass(frozen=True)
class ComparisonRun:
    variant: Variant
    model: str
    seed: int


def options_for(spec: Federation, variant: Variant) -> dict[str, Any]:
    """FedMAP takes the federation file's prior settings, overridden by the variant's."""
    if variant.method == "fedmap":
        return {**spec.algorithm.fedmap_options(), **variant.options}
    return dict(variant.options)


def load_sites(spec: Federation, device: torch.device | str = "cpu") -> list[SiteData]:
    """The tier-1 sites' data with the file's recipe (tiers 2 and 3 run in the DAG only)."""
    members = spec.tier(1)
    if not members:
        raise ConfigError(f"{spec.path}: no tier-1 site to simulate")
    recipe = spec.task.recipe
    shared = None
    if recipe.statistics == "federation":  # pooled from each site's counts, sums and medians
        from fedmap.shared_statistics import federated_statistics

        shared = federated_statistics([s.data for s in members], recipe)
    sites = [load_tabular_site(s.data, recipe, device, s.name, shared) for s in members]
    expected = spec.task.n_features or sites[0].num_features
    for site in sites:
        if site.num_features != expected:
            said = "task.n_features is" if spec.task.n_features else f"{sites[0].name} has"
            raise ConfigError(
                f"{spec.path}: {said} {expected}, but the recipe gives "
                f"{site.num_features} features at site {site.name}"
            )
    return sites


def execute(
    spec: Federation,
    run: ComparisonRun,
    device: str = "cpu",
    on_round: Callable[[int], None] | None = None,
    engine: EngineName = "loop",
) -> SimulationResult:
    algorithm = algorithm_for(spec, run)
    config = SimulationConfig(
        rounds=spec.algorithm.rounds,
        model=run.model,
        training=spec.algorithm.training,
        device=device,
        engine=engine,
    )
    sites = load_sites(spec, resolve_device(device))
    result = simulate(algorithm, sites, config, run.seed, on_round)
    return replace(result, method=run.variant.name)


def algorithm_for(spec: Federation, run: ComparisonRun) -> Algorithm:
    """The run's method with the file's settings; FedMAP under the file's privacy section."""
    algorithm = build_algorithm(run.variant.method, options_for(spec, run.variant))
    if run.variant.method == "fedmap" and spec.privacy.active:
        return private(algorithm, spec, run.seed)
    return algorithm


def private(method: Algorithm, spec: Federation, seed: int) -> PrivateFedMAP:
    """FedMAP under the file's ``privacy`` section, with the noise multiplier its plan needs."""
    assert isinstance(method, FedMAP)
    privacy = spec.privacy
    z = noise_multiplier(privacy, spec.algorithm.rounds) if privacy.dp else 0.0
    return PrivateFedMAP(method, privacy, z, seed)


def _single_thread(
    spec: Federation, run: ComparisonRun, device: str, engine: EngineName
) -> SimulationResult:
    torch.set_num_threads(1)
    return execute(spec, run, device, engine=engine)


def compare(
    spec: Federation,
    runs: Sequence[ComparisonRun],
    jobs: int = 1,
    device: str = "cpu",
    progress: Callable[[ComparisonRun], None] | None = None,
    engine: EngineName = "loop",
) -> list[tuple[ComparisonRun, SimulationResult]]:
    """Execute runs in order, in this process (jobs = 1) or in a pool of jobs processes;
    progress is told of each finished run."""
    out: list[tuple[ComparisonRun, SimulationResult]] = []
    if jobs <= 1:
        for run in runs:
            out.append((run, execute(spec, run, device, engine=engine)))
            if progress is not None:
                progress(run)
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_single_thread, spec, run, device, engine) for run in runs]
        for run, future in zip(runs, futures, strict=True):
            out.append((run, future.result()))
            if progress is not None:
                progress(run)
    return out


def records(
    spec: Federation, results: Sequence[tuple[ComparisonRun, SimulationResult]]
) -> list[dict[str, Any]]:
    """One record per (run, site): the site's validation metrics after the last round and
    ``n_scored``, the validation rows they were computed on. Binary tasks carry accuracy,
    balanced_accuracy, roc_auc, auprc, brier and ece; survival tasks carry c_index."""
    out = []
    for run, result in results:
        for site, scores in result.final.items():
            out.append(
                {
                    "federation": spec.name,
                    "model": run.model,
                    "method": run.variant.name,
                    "seed": run.seed,
                    "site": site,
                    "n_scored": result.n_scored.get(site),
                    **scores.as_dict(),
                }
            )
    return out
