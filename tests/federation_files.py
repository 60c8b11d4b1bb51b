"""The federation file the tests write: the synthetic contract, the paper's MLP on 30 features
and a small FedMAP run, on CPU. ``tests/conftest.py::make_federation`` and the security tests'
``heart`` federation both start from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def synthetic_federation(
    name: str,
    run: str,
    sites: Mapping[str, Mapping[str, Any]],
    storage: Mapping[str, Any],
    state_dir: str,
    rounds: int = 1,
    min_sites: int = 1,
    /,
    **overrides: Any,
) -> dict[str, Any]:
    """The body of a federation file; ``overrides`` replace its top-level keys (``name`` and
    ``sites`` among them: the other parameters are positional only, so they cannot clash)."""
    return {
        "name": name,
        "run": run,
        "task": {"contract": "synthetic", "target": "label", "model": "mlp", "n_features": 30},
        "algorithm": {
            "method": "fedmap",
            "prior": "gaussian",
            "variance": 1.0,
            "rounds": rounds,
            "epochs": 1,
            "batch_size": 32,
            "lr": 0.01,
        },
        "min_sites": min_sites,
        "storage": dict(storage),
        "sites": {site: dict(spec) for site, spec in sites.items()},
        "device": "cpu",
        "state_dir": state_dir,
        **overrides,
    }
