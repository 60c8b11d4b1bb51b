"""Configuration: frozen dataclasses filled from one YAML mapping; an unknown key is an error.

``ConfigError`` and ``from_mapping`` live in ``fedmap.schema`` (which reads federation files
without torch) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedmap.algorithms import METHODS, build_algorithm
from fedmap.schema import ConfigError as ConfigError
from fedmap.schema import from_mapping as from_mapping
from fedmap.simulator import SimulationConfig
from fedmap.synthetic import SyntheticConfig


@dataclass(frozen=True)
class BenchmarkConfig:
    """What ``bench/synthetic.py`` runs: every scenario x method x seed."""

    scenarios: tuple[str, ...] = ("feature-skew", "quantity-skew", "label-skew")
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    jobs: int = 2


@dataclass(frozen=True)
class ExperimentConfig:
    """One YAML file: the data generator, the federation, each method's hyper-parameters."""

    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    real: dict[str, Any] = field(default_factory=dict)
    """bench/real.py's section: the methods, models and seeds compared on federations/*.yaml."""
    priors: dict[str, Any] = field(default_factory=dict)
    """bench/priors.py's section: the prior ablation and cost benchmark."""
    scale: dict[str, Any] = field(default_factory=dict)
    """bench/scale.py's section: federation sizes and rounds of the DAG's scale study."""
    simulator: dict[str, Any] = field(default_factory=dict)
    """bench/simulator.py's section: the loop and batched engines against sites, and Flower."""
    missing: dict[str, Any] = field(default_factory=dict)
    """bench/missing.py's section: drop against imputation on the eICU demo."""
    paper_protocol: dict[str, Any] = field(default_factory=dict)
    """bench/paper_protocol.py's section: the authors' protocol (``fedmap.protocols.PAPER``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.methods, Mapping):
            raise ConfigError(
                f"methods: expected a mapping of method -> options, got {self.methods!r}"
            )
        for name, options in self.methods.items():
            if not isinstance(options, Mapping):
                raise ConfigError(f"methods.{name}: expected a mapping of options, got {options!r}")
            try:
                build_algorithm(name, options)
            except ValueError as exc:
                raise ConfigError(f"methods.{name}: {exc}") from exc


def load_config(path: Path | None) -> ExperimentConfig:
    """The configuration in path, or the embedded defaults when path is None."""
    if path is None:
        return ExperimentConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return from_mapping(ExperimentConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
