"""The federation file: one YAML that the coordinating centre hands to every site.

It names the federation and run, the data contract, where the object store is, each site's data
folder (relative paths are taken from the file's own folder), the model and how sites train.
Credentials may be given here or, better, through the usual AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), which boto3 reads when the file leaves them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedmap.algorithms import FedMAP, build_algorithm
from fedmap.config import ConfigError, from_mapping
from fedmap.training import LocalTraining

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


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

    def site(self, name: str) -> SiteConfig:
        if name not in self.sites:
            raise ConfigError(
                f"site {name!r} is not in federation {self.name!r} ({', '.join(self.sites)})"
            )
        return self.sites[name]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ConfigError(f"{what} must be 1-63 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def load_federation(path: Path) -> FederationConfig:
    """Read and check a federation file; every problem is a ConfigError naming the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read federation file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    known = {
        "name",
        "run",
        "contract",
        "storage",
        "sites",
        "model",
        "training",
        "fedmap",
        "device",
        "seed",
        "state_dir",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    for key in ("name", "run", "contract", "storage", "sites"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}")
    base = path.parent
    raw_sites = data["sites"]
    if not isinstance(raw_sites, dict) or not raw_sites:
        raise ConfigError(f"{path}: sites must map each site name to {{data: FOLDER}}")
    sites = {}
    for site, spec in raw_sites.items():
        if not isinstance(spec, dict) or set(spec) != {"data"}:
            raise ConfigError(f"{path}: sites.{site} must be {{data: FOLDER}}, got {spec!r}")
        sites[_name(site, f"sites.{site}")] = SiteConfig((base / str(spec["data"])).resolve())
    try:
        method = build_algorithm("fedmap", data.get("fedmap"))
    except ValueError as exc:
        raise ConfigError(f"{path}: fedmap: {exc}") from exc
    assert isinstance(method, FedMAP)
    state_dir = Path(str(data.get("state_dir", ".state/site-state")))
    try:
        return FederationConfig(
            name=_name(data["name"], "name"),
            run=_name(data["run"], "run"),
            contract=str(data["contract"]),
            storage=from_mapping(StorageConfig, data["storage"], "storage"),
            sites=sites,
            model=from_mapping(ModelConfig, data.get("model"), "model"),
            training=from_mapping(LocalTraining, data.get("training"), "training"),
            method=method,
            device=str(data.get("device", "auto")),
            seed=int(data.get("seed", 0)),
            state_dir=state_dir if state_dir.is_absolute() else (base / state_dir).resolve(),
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
