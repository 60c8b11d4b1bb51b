"""The shape of a federation, read without importing torch: who takes part, at which tier, on
which queue, for how many rounds, with what quorum and schedule, and which Airflow connections
hold the storage and MLflow settings.

The DAG factory builds its task graph from this (DAG files must parse in well under a second);
``site_tasks.federation`` reads the rest of the same file when a task runs. The schema is in
``docs/federation.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TOP_LEVEL = frozenset(
    {
        "name",
        "run",
        "task",
        "algorithm",
        "sites",
        "min_sites",
        "schedule",
        "storage",
        "mlflow",
        "device",
        "state_dir",
    }
)
REQUIRED = ("name", "task", "storage", "sites")
SITE_KEYS = frozenset({"data", "tier", "queue", "output"})
TIERS = (1, 2, 3)


class PlanError(ValueError):
    """A federation file whose shape is wrong; the message names the file and key."""


@dataclass(frozen=True)
class SitePlan:
    name: str
    data: str
    tier: int = 1
    """1: trains every round and contributes; 2: fine-tunes the final prior locally; 3: inference only."""
    queue: str = "default"
    output: str | None = None
    """Tier 3: where predictions are written (default ``<state_dir>/predictions/<name>/<site>``)."""


@dataclass(frozen=True)
class FederationPlan:
    path: Path
    name: str
    rounds: int
    min_sites: int
    schedule: str | None
    sites: tuple[SitePlan, ...]
    storage_connection: str | None = None
    """An Airflow connection (type aws) holding the S3 endpoint and keys, read by each task."""
    mlflow_connection: str | None = None
    """An Airflow connection holding the MLflow tracking URI, read by each task."""

    def tier(self, tier: int) -> tuple[SitePlan, ...]:
        return tuple(s for s in self.sites if s.tier == tier)


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise PlanError(f"{what} must be 1-63 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: cannot read federation file: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise PlanError(
            f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_LEVEL))})"
        )
    for key in REQUIRED:
        if key not in data:
            raise PlanError(f"{path}: missing key {key!r}")
    for key in ("task", "algorithm", "storage", "mlflow"):
        if key in data and not isinstance(data[key], dict):
            raise PlanError(f"{path}: {key} must be a mapping, got {data[key]!r}")
    return data


def _site(path: Path, name: Any, spec: Any) -> SitePlan:
    where = f"{path}: sites.{name}"
    check_name(name, f"{path}: sites.{name}")
    if not isinstance(spec, dict) or "data" not in spec or not set(spec) <= SITE_KEYS:
        raise PlanError(
            f"{where} must be {{data: FOLDER, tier: 1|2|3, queue: NAME, output: FOLDER}}, got {spec!r}"
        )
    tier = spec.get("tier", 1)
    if tier not in TIERS:
        raise PlanError(f"{where}.tier must be 1, 2 or 3, got {tier!r}")
    queue = check_name(spec.get("queue", "default"), f"{where}.queue")
    output = spec.get("output")
    if output is not None and (tier != 3 or not isinstance(output, str)):
        raise PlanError(f"{where}.output is a folder, and only tier-3 sites write predictions")
    return SitePlan(str(name), str(spec["data"]), int(tier), queue, output)


def _connection(path: Path, data: dict[str, Any], section: str) -> str | None:
    value = data.get(section, {}).get("connection")
    return None if value is None else check_name(value, f"{path}: {section}.connection")


def read_plan(path: Path) -> FederationPlan:
    """The federation's shape; every problem is a PlanError naming the file and key."""
    return plan_of(path, read_yaml(path))


def plan_of(path: Path, data: dict[str, Any]) -> FederationPlan:
    """The shape of an already-read federation file (``read_yaml``)."""
    raw_sites = data["sites"]
    if not isinstance(raw_sites, dict) or not raw_sites:
        raise PlanError(f"{path}: sites must map each site name to {{data: FOLDER}}")
    sites = tuple(_site(path, name, spec) for name, spec in raw_sites.items())
    rounds, min_sites = data.get("algorithm", {}).get("rounds", 1), data.get("min_sites", 1)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise PlanError(f"{path}: algorithm.rounds must be a positive integer, got {rounds!r}")
    contributors = sum(s.tier == 1 for s in sites)
    if not isinstance(min_sites, int) or not 1 <= min_sites <= max(contributors, 1):
        raise PlanError(
            f"{path}: min_sites must be between 1 and the {contributors} tier-1 sites, got {min_sites!r}"
        )
    schedule = data.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise PlanError(f"{path}: schedule must be a cron expression or preset such as '@weekly'")
    return FederationPlan(
        path,
        check_name(data["name"], f"{path}: name"),
        rounds,
        min_sites,
        schedule,
        sites,
        _connection(path, data, "storage"),
        _connection(path, data, "mlflow"),
    )
