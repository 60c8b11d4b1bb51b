"""The federation file: one YAML that the coordinating centre hands to every site.

It names the federation and run, the data contract, where the object store is, each site's data
folder (relative paths are taken from the file's own folder), the model and how sites train.
Credentials may be given here or, better, through the usual AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), which boto3 reads when the file leaves them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedmap.algorithms import FedMAP, build_algorithm
from fedmap.config import ConfigError, from_mapping
from fedmap.training import LocalTraining
from site_tasks.plan import PlanError, check_name, plan_of, read_yaml


@dataclass(frozen=True)
class StorageConfig:
    """An S3 bucket: AWS when endpoint_url is None, otherwise MinIO or the local server."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    n_features: int = 30


@dataclass(frozen=True)
class SiteConfig:
    data: Path
    tier: int = 1
    queue: str = "default"


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

    def site(self, name: str) -> SiteConfig:
        if name not in self.sites:
            raise ConfigError(
                f"site {name!r} is not in federation {self.name!r} ({', '.join(self.sites)})"
            )
        return self.sites[name]


def load_federation(path: Path) -> FederationConfig:
    """Read and check a federation file; every problem is a ConfigError naming the key."""
    try:
        data = read_yaml(path)
        plan = plan_of(path, data)
        run = check_name(data["run"], f"{path}: run")
    except PlanError as exc:
        raise ConfigError(str(exc)) from exc
    base = path.parent
    sites = {s.name: SiteConfig((base / s.data).resolve(), s.tier, s.queue) for s in plan.sites}
    try:
        method = build_algorithm("fedmap", data.get("fedmap"))
    except ValueError as exc:
        raise ConfigError(f"{path}: fedmap: {exc}") from exc
    assert isinstance(method, FedMAP)
    from site_tasks.contracts import CONTRACTS  # light: GX loads only when validating

    contract = data["contract"]
    if contract not in CONTRACTS:
        raise ConfigError(
            f"{path}: contract must be one of {', '.join(CONTRACTS)}, got {contract!r}"
        )
    seed, device = data.get("seed", 0), data.get("device", "auto")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{path}: seed must be an integer, got {seed!r}")
    if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise ConfigError(f"{path}: device must be cpu, cuda or auto, got {device!r}")
    state_dir = Path(str(data.get("state_dir", ".state/site-state")))
    try:
        return FederationConfig(
            name=plan.name,
            run=run,
            contract=contract,
            storage=from_mapping(StorageConfig, data["storage"], "storage"),
            sites=sites,
            model=from_mapping(ModelConfig, data.get("model"), "model"),
            training=from_mapping(LocalTraining, data.get("training"), "training"),
            method=method,
            device=device,
            seed=seed,
            state_dir=state_dir if state_dir.is_absolute() else (base / state_dir).resolve(),
            rounds=plan.rounds,
            min_sites=plan.min_sites,
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
