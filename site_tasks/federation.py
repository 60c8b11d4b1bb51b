"""A federation file as a task runs it: :mod:`fedmap.schema` reads and checks the file, and this
module adds what only a deployment needs: the bucket must be there, the data contract's suite must
exist and agree with the recipe (its columns give the model's input size), the method must be
FedMAP, which it builds.

Settings left out of ``storage`` and ``mlflow`` come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``,
``MLFLOW_TRACKING_URI``), which the DAG fills from the Airflow connections the file names. The
schema is documented in ``docs/federation.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from site_tasks.site.contracts import Contract

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
    def data_contract(self) -> Contract:
        """The suite and how the site's files are read (``site_tasks.site.contracts``)."""
        return data_contract(self.federation.task)

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


def data_contract(task: TaskSpec) -> Contract:
    """The task's contract: its suite (a name in ``expectations/`` or a path) read with the
    recipe's target, time column and missing tokens."""
    from site_tasks.site.contracts import contract_of, suite_path  # light: no GX here

    try:
        path = suite_path(task.suite or task.contract)
        return contract_of(
            task.contract, path, task.recipe.target, task.recipe.time, task.recipe.missing
        )
    except ValueError as exc:
        raise ConfigError(f"task.contract: {exc}") from exc


def n_features(task: TaskSpec, contract: Contract) -> int:
    """The model's input size: the recipe's features over the suite's ordered columns. A
    ``task.n_features`` the file gives must agree; a suite without a column list needs one."""
    from site_tasks.site.contracts import suite_columns

    columns = suite_columns(contract.suite_path)
    if not columns:
        if task.n_features is None:
            raise ConfigError(
                f"task.n_features is needed: the suite {contract.suite_path.name} lists no "
                "ordered columns to count the features from"
            )
        return task.n_features
    absent = [c for c in (*task.recipe.targets, *task.recipe.categorical) if c not in columns]
    if absent:
        raise ConfigError(
            f"task: column(s) {', '.join(absent)} of the recipe are not in the contract's "
            f"columns ({contract.suite_path.name})"
        )
    indicators = task.recipe.missing_indicators
    if isinstance(indicators, tuple):
        inputs = task.recipe.input_columns(columns)
        unknown = [c for c in indicators if c not in inputs]
        if unknown:
            raise ConfigError(
                f"task.missing_indicators: {', '.join(unknown)} is not an input column of the "
                f"contract ({contract.suite_path.name})"
            )
    computed = len(task.recipe.feature_columns(columns))
    if task.n_features is not None and task.n_features != computed:
        raise ConfigError(
            f"task.n_features is {task.n_features}, but the recipe gives {computed} features "
            f"over the contract's columns; leave n_features out to have it computed"
        )
    return computed


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


def load_federation(path: Path, deployed: bool = True) -> FederationConfig:
    """Read and check a federation file for a deployed run; every problem is a ConfigError
    naming the file and the key. deployed=False accepts a file without ``storage``: a site
    checking its data locally before it joins (``site-task validate``)."""
    federation = read_federation(path)
    if deployed:
        federation.require_storage()
    try:
        if federation.task.recipe.statistics != "site":
            raise ConfigError(
                "task.statistics: federation pools the sites' statistics in the simulator only "
                "(fedmap simulate, bench/missing.py); a deployment imputes and standardises "
                "with each site's own (statistics: site)"
            )
        contract = data_contract(federation.task)
        inputs = n_features(federation.task, contract)
        method = _method(federation.algorithm)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return FederationConfig(
        federation=federation,
        method=method,
        run=federation.run,
        rounds=federation.rounds,
        state_dir=federation.state_dir,
        model=ModelConfig(federation.task.model, inputs),
        training=federation.algorithm.training,
    )
