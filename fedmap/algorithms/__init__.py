"""FedMAP and the baselines it is judged against, each implementing ``Algorithm``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from fedmap.algorithms.ditto import Ditto
from fedmap.algorithms.fedavg import FedAvg, FedAvgFineTune, FedProx
from fedmap.algorithms.fedbn import FedBN
from fedmap.algorithms.fedmap import FedMAP
from fedmap.algorithms.fedper import FedPer
from fedmap.algorithms.individual import (
    EarlyStopped,
    Individual,
    early_stopped,
    holdout,
    local_only,
)
from fedmap.algorithms.protocol import Algorithm, LocalResult, SiteContext, SiteUpdate

REGISTRY: dict[str, Callable[..., Algorithm]] = {
    "fedmap": FedMAP,
    "individual": Individual,
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedbn": FedBN,
    "fedavg-ft": FedAvgFineTune,
    "ditto": Ditto,
    "fedper": FedPer,
}
METHODS: tuple[str, ...] = tuple(REGISTRY)
PERSONALISED = frozenset({"fedmap", "individual", "fedbn", "fedavg-ft", "ditto", "fedper"})


def build_algorithm(name: str, options: Mapping[str, Any] | None = None) -> Algorithm:
    """The method called name, with hyper-parameters from options; unknown keys are errors."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    factory = REGISTRY[name]
    options = dict(options or {})
    allowed = {f.name for f in fields(factory) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(options) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"method {name!r}: unknown option(s) {', '.join(unknown)} (known: {known})"
        )
    return factory(**options)


__all__ = [
    "METHODS",
    "PERSONALISED",
    "REGISTRY",
    "Algorithm",
    "Ditto",
    "EarlyStopped",
    "FedAvg",
    "FedAvgFineTune",
    "FedBN",
    "FedMAP",
    "FedPer",
    "FedProx",
    "Individual",
    "LocalResult",
    "SiteContext",
    "SiteUpdate",
    "build_algorithm",
    "early_stopped",
    "holdout",
    "local_only",
]
