"""Configuration: frozen dataclasses filled from one YAML mapping; an unknown key is an error."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fedmap.algorithms import METHODS, build_algorithm
from fedmap.simulator import SimulationConfig
from fedmap.synthetic import SyntheticConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names its path."""


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass cls from data, recursing into dataclass-typed fields.

    Keys not declared on cls raise ConfigError naming ``path.key``; missing keys keep defaults.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = ", ".join(f"{path}.{k}" if path else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {where} (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        sub = f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            kwargs[name] = from_mapping(hint, value, sub)
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{sub}: expected a list, got {value!r}")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or '<root>'}: {exc}") from exc


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
