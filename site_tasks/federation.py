"""A federation file as a task runs it: :mod:`fedmap.schema` reads and checks the file, and this
module adds what only a deployment needs: the bucket must be there, the data contract must be one
of ``site_tasks.site.contracts``, the method must be FedMAP, which it builds.

Settings left out of ``storage`` and ``mlflow`` come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``,
``MLFLOW_TRACKING_URI``), which the DAG fills from the Airflow connections the file names. The
schema is documented in ``docs/federation.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedmap.algorithms import FedMAP, build_algorithm
from fedmap.schema import (
    AlgorithmSpec,
    ConfigError,
    Federation,
    Mlflow,
    Site,
    Storage,
    TabularTask,
    TaskSpec,
    read_federation,
)
from fedmap.training import LocalTraining

METHODS = ("fedmap",)
StorageConfig = Storage
"""The name ``site_tasks.storage`` and its tests use for :class:`fedmap.schema.Storage`."""
MlflowConfig = Mlflow


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    n_features: int = 30


@dataclass(frozen=True)
class FederationConfig:
    """The federation file and what a task builds from it. ``run``, ``rounds``, ``state_dir``,
    ``model`` and ``training`` start as the file says and may be overridden with
    ``dataclasses.replace`` (the DAG sets ``run`` to the Airflow run); the rest is the file's."""

    federation: Federation
    method: FedMAP
    run: str
    rounds: int
    state_dir: Path
    """Where a site keeps its own theta_k between rounds. It never leaves the site."""
    model: ModelConfig
    training: LocalTraining

    @property
    def name(self) -> str:
        return self.federation.name

    @property
    def contract(self) -> str:
        return self.federation.task.contract

    @property
    def recipe(self) -> TabularTask:
        """How the site's rows become features and a target (the ``task`` section)."""
        return self.federation.task.recipe

    @property
    def target(self) -> str:
        return self.federation.task.recipe.target

    @property
    def storage(self) -> Storage:
        return self.federation.require_storage()

    @property
    def mlflow(self) -> Mlflow:
        return self.federation.mlflow

    @property
    def sites(self) -> Mapping[str, Site]:
        return {s.name: s for s in self.federation.sites}

    @property
    def min_sites(self) -> int:
        """The quorum: a round needs at least this many accepted updates."""
        return self.federation.min_sites

    @property
    def device(self) -> str:
        return self.federation.device

    @property
    def seed(self) -> int:
        return self.federation.algorithm.seed

    def site(self, name: str) -> Site:
        return self.federation.site(name)


def _check_task(task: TaskSpec) -> None:
    from site_tasks.site.contracts import CONTRACTS  # light: GX loads only when validating

    if task.contract not in CONTRACTS:
        raise ConfigError(
            f"task.contract must be one of {', '.join(CONTRACTS)}, got {task.contract!r}"
        )
    label = CONTRACTS[task.contract].label
    if task.recipe.target != label:
        raise ConfigError(
            f"task.target must be the target column of contract {task.contract!r} ({label!r}), "
            f"got {task.recipe.target!r}"
        )


def _method(algo: AlgorithmSpec) -> FedMAP:
    if algo.method not in METHODS:
        raise ConfigError(
            f"algorithm.method must be one of {', '.join(METHODS)} in a federation, got "
            f"{algo.method!r} (the simulator compares the others: fedmap simulate --methods)"
        )
    try:
        method = build_algorithm("fedmap", algo.fedmap_options())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"algorithm: {exc}") from exc
    assert isinstance(method, FedMAP)
    return method


def load_federation(path: Path) -> FederationConfig:
    """Read and check a federation file for a deployed run; every problem is a ConfigError
    naming the file and the key."""
    federation = read_federation(path)
    federation.require_storage()
    try:
        _check_task(federation.task)
        method = _method(federation.algorithm)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return FederationConfig(
        federation=federation,
        method=method,
        run=federation.run,
        rounds=federation.rounds,
        state_dir=federation.state_dir,
        model=ModelConfig(federation.task.model, federation.task.n_features),
        training=federation.algorithm.training,
    )
