"""The federation file ``federations/<name>.yaml``: one YAML that the coordinating centre hands to
every site and to Airflow. Its schema is documented in ``docs/federation.md``.

Sections: ``task`` (data contract, target column, model), ``algorithm`` (method, prior, sigma^2,
rounds, local epochs, lr), ``sites`` (data folder, tier, queue), ``min_sites`` (the quorum),
``schedule``, ``storage`` and ``mlflow``. Settings left out of ``storage`` and ``mlflow`` come
from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``,
``MLFLOW_TRACKING_URI``), which the DAG fills from the Airflow connections the file names.
Relative paths are taken from the file's own folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmap.algorithms import FedMAP, build_algorithm
from fedmap.config import ConfigError, from_mapping
from fedmap.spec import PRIORS, AlgorithmSpec, TaskSpec, algorithm_spec, task_spec
from fedmap.tabular import TabularTask
from fedmap.training import LocalTraining
from site_tasks.plan import PlanError, check_name, plan_of, read_yaml

METHODS = ("fedmap",)


@dataclass(frozen=True)
class StorageConfig:
    """An S3 bucket: AWS when endpoint_url is None, otherwise MinIO or the local server."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    connection: str | None = None
    """An Airflow connection (type aws) the DAG reads into the environment; see docs/federation.md."""


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI; registration is skipped when neither is set."""
    connection: str | None = None
    """An Airflow connection whose host (or URI) is the tracking server."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    n_features: int = 30


@dataclass(frozen=True)
class SiteConfig:
    data: Path
    tier: int = 1
    queue: str = "default"
    output: Path | None = None
    """Tier 3: the folder predictions are written to."""


@dataclass(frozen=True)
class FederationConfig:
    name: str
    run: str
    contract: str
    storage: StorageConfig
    sites: Mapping[str, SiteConfig]
    model: ModelConfig = field(default_factory=ModelConfig)
    training: LocalTraining = field(default_factory=LocalTraining)
    method: FedMAP = field(default_factory=FedMAP)
    device: str = "auto"
    seed: int = 0
    state_dir: Path = Path(".state/site-state")
    """Where a site keeps its own theta_k between rounds. It never leaves the site."""
    rounds: int = 1
    min_sites: int = 1
    """The quorum: a round needs at least this many accepted updates."""
    target: str = "label"
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    recipe: TabularTask = field(default_factory=TabularTask)
    """How the site's rows become features and a target (the ``task`` section)."""

    def site(self, name: str) -> SiteConfig:
        if name not in self.sites:
            raise ConfigError(
                f"site {name!r} is not in federation {self.name!r} ({', '.join(self.sites)})"
            )
        return self.sites[name]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _task(data: Any) -> TaskSpec:
    from site_tasks.site.contracts import CONTRACTS  # light: GX loads only when validating

    task = task_spec(data)
    _check(
        task.contract in CONTRACTS,
        f"task.contract must be one of {', '.join(CONTRACTS)}, got {task.contract!r}",
    )
    label = CONTRACTS[task.contract].label
    _check(
        task.recipe.target == label,
        f"task.target must be the target column of contract {task.contract!r} ({label!r}), "
        f"got {task.recipe.target!r}",
    )
    return task


def _algorithm(data: Mapping[str, Any] | None) -> tuple[AlgorithmSpec, FedMAP, LocalTraining]:
    algo = algorithm_spec(data)
    _check(
        algo.method in METHODS,
        f"algorithm.method must be one of {', '.join(METHODS)} in a federation, got "
        f"{algo.method!r} (the simulator compares the others: fedmap simulate --methods)",
    )
    _check(
        algo.prior in PRIORS,
        f"algorithm.prior must be one of {', '.join(PRIORS)}, got {algo.prior!r}",
    )
    try:
        method = build_algorithm("fedmap", algo.fedmap_options())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"algorithm: {exc}") from exc
    assert isinstance(method, FedMAP)
    return algo, method, algo.training


def load_federation(path: Path) -> FederationConfig:
    """Read and check a federation file; every problem is a ConfigError naming the key."""
    try:
        data = read_yaml(path)
        plan = plan_of(path, data)
        run = check_name(data.get("run", "manual"), f"{path}: run")
    except PlanError as exc:
        raise ConfigError(str(exc)) from exc
    base = path.parent
    sites = {
        s.name: SiteConfig(
            (base / s.data).resolve(),
            s.tier,
            s.queue,
            (base / s.output).resolve() if s.output else None,
        )
        for s in plan.sites
    }
    device = data.get("device", "auto")
    state_dir = Path(str(data.get("state_dir", ".state/site-state")))
    try:
        task = _task(data["task"])
        algo, method, training = _algorithm(data.get("algorithm"))
        _check(
            isinstance(device, str) and (device in ("auto", "cpu") or device.startswith("cuda")),
            f"device must be cpu, cuda or auto, got {device!r}",
        )
        return FederationConfig(
            name=plan.name,
            run=run,
            contract=task.contract,
            storage=from_mapping(StorageConfig, data["storage"], "storage"),
            sites=sites,
            model=ModelConfig(task.model, task.n_features),
            recipe=task.recipe,
            training=training,
            method=method,
            device=device,
            seed=algo.seed,
            state_dir=state_dir if state_dir.is_absolute() else (base / state_dir).resolve(),
            rounds=plan.rounds,
            min_sites=plan.min_sites,
            target=task.recipe.target,
            mlflow=from_mapping(MlflowConfig, data.get("mlflow"), "mlflow"),
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
