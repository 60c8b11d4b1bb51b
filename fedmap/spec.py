"""The part of a federation file (``federations/<name>.yaml``) that says what is learnt and how.

The same file drives three things: ``fedmap simulate --federation FILE`` (every site in this
process), the Airflow DAG (``site_tasks.federation`` adds storage, MLflow, queues and the quorum)
and a DVC benchmark stage (``bench/real.py``). This module reads ``name``, ``task``, ``algorithm``
and each site's ``data`` and ``tier``; the deployment keys (``run``, ``min_sites``, ``schedule``,
``storage``, ``mlflow``, ``device``, ``state_dir``, a site's ``queue`` and ``output``) belong to
the DAG and are not read here. The schema is in ``docs/federation.md`` and ``docs/byod.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedmap.config import ConfigError, from_mapping
from fedmap.models import MODEL_NAMES
from fedmap.tabular import TabularTask
from fedmap.training import LocalTraining

TASK_KEYS = ("contract", "model", "n_features")
PRIORS = ("gaussian", "diagonal", "icnn")
"""FedMAP's priors (docs/results/priors.md)."""


@dataclass(frozen=True)
class TaskSpec:
    """``task``: the data contract (a suite in ``expectations/``), the model and the recipe."""

    contract: str
    model: str = "mlp"
    n_features: int = 30
    recipe: TabularTask = field(default_factory=TabularTask)


@dataclass(frozen=True)
class AlgorithmSpec:
    """``algorithm``: FedMAP's prior and sigma^2, the rounds, and each site's local step."""

    method: str = "fedmap"
    prior: str = "gaussian"
    variance: float = 1.0
    input_variance: float | None = math.inf
    weighting: str = "omega"
    min_variance: float | None = None
    """Learned priors (diagonal, icnn): the floor of their variance; None: ``variance``, so a
    learned prior is never tighter than the Gaussian one of the same file."""
    rounds: int = 1
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    seed: int = 0

    @property
    def training(self) -> LocalTraining:
        return LocalTraining(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)

    def fedmap_options(self) -> dict[str, Any]:
        """The options of ``build_algorithm("fedmap", ...)`` this section sets."""
        return {
            "prior": self.prior,
            "variance": float(self.variance),
            "input_variance": None if self.input_variance is None else float(self.input_variance),
            "weighting": self.weighting,
            "min_variance": float(
                self.variance if self.min_variance is None else self.min_variance
            ),
        }


@dataclass(frozen=True)
class SiteSpec:
    name: str
    data: Path
    tier: int = 1


@dataclass(frozen=True)
class FederationSpec:
    path: Path
    name: str
    task: TaskSpec
    algorithm: AlgorithmSpec
    sites: tuple[SiteSpec, ...]

    def tier(self, *tiers: int) -> tuple[SiteSpec, ...]:
        return tuple(s for s in self.sites if s.tier in tiers)


def task_spec(data: Any) -> TaskSpec:
    """Read the ``task`` section; the recipe keys go to :class:`TabularTask`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"task: expected a mapping, got {type(data).__name__}")
    if "contract" not in data:
        raise ConfigError("task.contract is required (a suite in expectations/)")
    recipe = {k: v for k, v in data.items() if k not in TASK_KEYS}
    categorical = recipe.get("categorical", {})
    if not isinstance(categorical, Mapping) or not all(
        isinstance(v, list | tuple) for v in categorical.values()
    ):
        raise ConfigError("task.categorical: expected a mapping of column -> list of levels")
    recipe["categorical"] = {str(k): tuple(float(x) for x in v) for k, v in categorical.items()}
    spec = TaskSpec(
        contract=str(data["contract"]),
        model=data.get("model", "mlp"),
        n_features=data.get("n_features", 30),
        recipe=from_mapping(TabularTask, recipe, "task"),
    )
    if spec.model not in MODEL_NAMES:
        raise ConfigError(f"task.model must be one of {', '.join(MODEL_NAMES)}, got {spec.model!r}")
    if not isinstance(spec.n_features, int) or spec.n_features < 1:
        raise ConfigError(f"task.n_features must be a positive integer, got {spec.n_features!r}")
    return spec


def algorithm_spec(data: Any) -> AlgorithmSpec:
    spec = from_mapping(AlgorithmSpec, data, "algorithm")
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool):
        raise ConfigError(f"algorithm.seed must be an integer, got {spec.seed!r}")
    try:
        spec.training  # noqa: B018  (validates epochs, batch_size, lr)
    except ValueError as exc:
        raise ConfigError(f"algorithm: {exc}") from exc
    return spec


def load_spec(path: Path) -> FederationSpec:
    """Read what a simulation needs from a federation file; errors name the file and key."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the federation file: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        for key in ("name", "task", "sites"):
            if key not in data:
                raise ConfigError(f"{key} is required")
        sites = data["sites"]
        if not isinstance(sites, Mapping) or not sites:
            raise ConfigError("sites: expected a mapping of site name -> {data, tier}")
        out = []
        for name, site in sites.items():
            if not isinstance(site, Mapping) or "data" not in site:
                raise ConfigError(f"sites.{name}.data is required")
            tier = site.get("tier", 1)
            if tier not in (1, 2, 3):
                raise ConfigError(f"sites.{name}.tier must be 1, 2 or 3, got {tier!r}")
            out.append(SiteSpec(str(name), (path.parent / str(site["data"])).resolve(), tier))
        return FederationSpec(
            path,
            str(data["name"]),
            task_spec(data["task"]),
            algorithm_spec(data.get("algorithm")),
            tuple(out),
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
