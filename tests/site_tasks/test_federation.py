"""The federation file: paths, names, defaults and the errors hospital IT will see."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from fedmap.config import ConfigError
from site_tasks.federation import load_federation

BASE: dict[str, object] = {
    "name": "fed",
    "run": "run-1",
    "task": {"contract": "synthetic"},
    "storage": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"},
    "sites": {"site-01": {"data": "data/site-01"}},
}


def write(tmp_path: Path, body: Mapping[str, object]) -> Path:
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_loads_with_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_federation(write(tmp_path, BASE))
    assert config.site("site-01").data == (tmp_path / "data" / "site-01").resolve()
    assert config.state_dir == (tmp_path / ".state" / "site-state").resolve()
    assert config.device == "auto"
    assert config.method.variance == 1.0 and math.isinf(config.method.input_variance or 0)
    assert config.storage.region == "us-east-1" and config.storage.access_key_id is None


def test_fedmap_options_and_training_are_read(tmp_path: Path) -> None:
    body = {
        **BASE,
        "algorithm": {"variance": 15.0, "input_variance": None, "lr": 0.001, "rounds": 3},
        "task": {"contract": "synthetic", "model": "logreg", "n_features": 30},
    }
    config = load_federation(write(tmp_path, body))
    assert config.method.variance == 15.0 and config.method.input_variance is None
    assert config.training.lr == 0.001 and config.training.epochs == 1
    assert config.rounds == 3 and config.model.name == "logreg" and config.target == "label"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown key"),
        ({"storage": {"bucket": "b", "endpont_url": "x"}}, r"storage\.endpont_url"),
        ({"algorithm": {"varaince": 1}}, r"algorithm\.varaince"),
        ({"algorithm": {"lr": -1}}, "algorithm"),
        ({"fedmap": {"variance": 1}}, "unknown key"),
        ({"task": {"contract": "synthetic", "modle": "mlp"}}, r"task\.modle"),
        ({"mlflow": {"tracking_url": "x"}}, r"mlflow\.tracking_url"),
        ({"task": "synthetic"}, "task must be a mapping"),
        ({"run": "bad name!"}, "run must be"),
        ({"sites": {"site 01": {"data": "x"}}}, "sites.site 01"),
        ({"sites": {"site-01": "x"}}, r"sites\.site-01 must be"),
        ({"sites": {}}, "sites must map"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_federation(write(tmp_path, {**BASE, **change}))


def test_missing_required_key_and_unknown_site(tmp_path: Path) -> None:
    body = dict(BASE)
    del body["task"]
    with pytest.raises(ConfigError, match="missing key 'task'"):
        load_federation(write(tmp_path, body))
    config = load_federation(write(tmp_path, BASE))
    with pytest.raises(ConfigError, match="site 'site-09' is not in federation 'fed'"):
        config.site("site-09")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": {"contract": "synthetc"}}, "task.contract must be one of synthetic"),
        ({"task": {"contract": "synthetic", "target": "y"}}, "task.target must be"),
        ({"task": {"contract": "synthetic", "model": "cnn"}}, "task.model must be one of"),
        ({"algorithm": {"method": "fedavg"}}, "algorithm.method must be one of fedmap"),
        (
            {"algorithm": {"prior": "laplace"}},
            "algorithm.prior must be one of gaussian, diagonal, icnn",
        ),
        ({"algorithm": {"seed": "abc"}}, "algorithm.seed must be an integer"),
        ({"algorithm": {"weighting": "votes"}}, "weighting must be one of"),
        ({"device": "gpu"}, "device must be cpu, cuda or auto"),
        ({"algorithm": {"rounds": 0}}, "algorithm.rounds must be a positive integer"),
        ({"sites": {"site-01": {"data": "x", "output": "y"}}}, "only tier-3 sites"),
        ({"storage": {"bucket": "b", "connection": "bad id!"}}, "storage.connection must be"),
        ({"min_sites": 5}, "min_sites must be between 1 and the 1 tier-1 sites"),
        ({"sites": {"site-01": {"data": "x", "tier": 4}}}, "tier must be 1, 2 or 3"),
    ],
)
def test_setting_errors_are_config_errors(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_federation(write(tmp_path, {**BASE, **change}))


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    from site_tasks.site.train import device_for

    if torch.cuda.is_available():
        assert device_for("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            device_for("cuda")
    assert device_for("auto").type in ("cpu", "cuda")
