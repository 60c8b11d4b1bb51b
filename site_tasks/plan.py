"""The shape of a federation, read without importing torch: who takes part, at which tier, on
which queue, for how many rounds, with what quorum and schedule.

The DAG factory builds its task graph from this (DAG files must parse in well under a second);
``site_tasks.federation`` reads the rest of the same file when a task runs.
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
        "contract",
        "storage",
        "sites",
        "model",
        "training",
        "fedmap",
        "device",
        "seed",
        "state_dir",
        "rounds",
        "min_sites",
        "schedule",
    }
)
SITE_KEYS = frozenset({"data", "tier", "queue"})
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


@dataclass(frozen=True)
class FederationPlan:
    path: Path
    name: str
    rounds: int
    min_sites: int
    schedule: str | None
    sites: tuple[SitePlan, ...]

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
    for key in ("name", "run", "contract", "storage", "sites"):
        if key not in data:
            raise PlanError(f"{path}: missing key {key!r}")
    return data


def _site(path: Path, name: Any, spec: Any) -> SitePlan:
    where = f"{path}: sites.{name}"
    check_name(name, f"{path}: sites.{name}")
    if not isinstance(spec, dict) or "data" not in spec or not set(spec) <= SITE_KEYS:
        raise PlanError(f"{where} must be {{data: FOLDER, tier: 1|2|3, queue: NAME}}, got {spec!r}")
    tier = spec.get("tier", 1)
    if tier not in TIERS:
        raise PlanError(f"{where}.tier must be 1, 2 or 3, got {tier!r}")
    queue = check_name(spec.get("queue", "default"), f"{where}.queue")
    return SitePlan(str(name), str(spec["data"]), int(tier), queue)


def read_plan(path: Path) -> FederationPlan:
    """The federation's shape; every problem is a PlanError naming the file and key."""
    return plan_of(path, read_yaml(path))


def plan_of(path: Path, data: dict[str, Any]) -> FederationPlan:
    """The shape of an already-read federation file (``read_yaml``)."""
    raw_sites = data["sites"]
    if not isinstance(raw_sites, dict) or not raw_sites:
        raise PlanError(f"{path}: sites must map each site name to {{data: FOLDER}}")
    sites = tuple(_site(path, name, spec) for name, spec in raw_sites.items())
    rounds, min_sites = data.get("rounds", 1), data.get("min_sites", 1)
    if not isinstance(rounds, int) or rounds < 1:
        raise PlanError(f"{path}: rounds must be a positive integer, got {rounds!r}")
    contributors = sum(s.tier == 1 for s in sites)
    if not isinstance(min_sites, int) or not 1 <= min_sites <= max(contributors, 1):
        raise PlanError(
            f"{path}: min_sites must be between 1 and the {contributors} tier-1 sites, got {min_sites!r}"
        )
    schedule = data.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise PlanError(f"{path}: schedule must be a cron expression or preset such as '@weekly'")
    return FederationPlan(
        path, check_name(data["name"], f"{path}: name"), rounds, min_sites, schedule, sites
    )
