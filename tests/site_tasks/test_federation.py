"""The federation file as a task runs it: what ``load_federation`` adds to ``fedmap.schema``
(the bucket, the contract, FedMAP built) and the errors hospital IT will see. The file's keys
themselves are tested in ``tests/fedmap/test_schema.py``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from fedmap.config import ConfigError
from fedmap.schema import Site, Storage, read_federation
from fedmap.training import LocalTraining
from site_tasks.federation import ModelConfig, load_federation

ROOT = Path(__file__).resolve().parents[2]
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
    path = write(tmp_path, BASE)
    config = load_federation(path)
    assert config.federation == read_federation(path)
    assert (config.name, config.run, config.contract, config.target) == (
        "fed",
        "run-1",
        "synthetic",
        "label",
    )
    assert config.site("site-01") == Site("site-01", (tmp_path / "data" / "site-01").resolve())
    assert dict(config.sites) == {"site-01": config.site("site-01")}
    assert config.state_dir == (tmp_path / ".state" / "site-state").resolve()
    assert (config.device, config.seed, config.rounds, config.min_sites) == ("auto", 0, 1, 1)
    assert config.model == ModelConfig("mlp", 30) and config.training == LocalTraining()
    assert config.method.variance == 1.0 and math.isinf(config.method.input_variance or 0)
    assert config.storage == Storage("b", "http://127.0.0.1:1")
    assert config.storage.region == "us-east-1" and config.storage.access_key_id is None
    assert config.mlflow.tracking_uri is None and config.recipe.type == "binary"


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


def test_a_task_may_override_the_run_the_rounds_the_model_and_training(tmp_path: Path) -> None:
    config = load_federation(write(tmp_path, BASE))
    changed = replace(
        config,
        run="second",
        rounds=4,
        state_dir=tmp_path / "elsewhere",
        model=ModelConfig("mlp", 29),
        training=LocalTraining(epochs=3),
    )
    assert (changed.run, changed.rounds, changed.state_dir) == ("second", 4, tmp_path / "elsewhere")
    assert changed.model.n_features == 29 and changed.training.epochs == 3
    assert changed.federation is config.federation and changed.name == "fed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # the file's own rules (fedmap.schema) reach a task unchanged
        ({"extra": 1}, "unknown key"),
        ({"fedmap": {"variance": 1}}, "unknown key"),
        ({"storage": {"bucket": "b", "endpont_url": "x"}}, r"storage\.endpont_url"),
        ({"algorithm": {"varaince": 1}}, r"algorithm\.varaince"),
        ({"task": "synthetic"}, "task must be a mapping"),
        ({"sites": {"site-01": "x"}}, r"sites\.site-01 must be"),
        ({"min_sites": 5}, "min_sites must be between 1 and the 1 tier-1 sites"),
        # what only a deployment checks
        ({"task": {"contract": "synthetc"}}, r"task.contract: unknown data contract 'synthetc'"),
        (
            {"task": {"contract": "synthetic", "target": "y"}},
            r"task.target is 'y', but the contract's suite synthetic.json says 'label'",
        ),
        ({"task": {"contract": "synthetic", "n_features": 29}}, "task.n_features is 29, but"),
        ({"task": {"contract": "elsewhere/none.json"}}, "unknown data contract"),
        (
            {"task": {"contract": "synthetic", "impute": "median", "missing_indicators": ["x99"]}},
            "task.missing_indicators: x99 is not an input column",
        ),
        (
            {"task": {"contract": "synthetic", "statistics": "federation"}},
            "task.statistics: federation pools the sites' statistics in the simulator only",
        ),
        ({"algorithm": {"method": "fedavg"}}, "algorithm.method must be one of fedmap"),
        ({"algorithm": {"weighting": "votes"}}, "algorithm: .*weighting must be one of"),
        ({"algorithm": {"variance": -1.0}}, "algorithm: "),
    ],
)
def test_errors_name_the_file_and_key(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = write(tmp_path, {**BASE, **change})
    with pytest.raises(ConfigError, match=rf"^{path}: .*{message}"):
        load_federation(path)


def test_a_deployment_needs_its_bucket(tmp_path: Path) -> None:
    path = write(tmp_path, {k: v for k, v in BASE.items() if k != "storage"})
    with pytest.raises(ConfigError, match=rf"^{path}: missing key 'storage'"):
        load_federation(path)
    assert load_federation(path, deployed=False).federation.storage is None  # a local check


def _suite(path: Path, columns: list[str], meta: dict[str, object] | None) -> Path:
    body = {
        "name": path.stem,
        "expectations": [
            {
                "type": "expect_table_columns_to_match_ordered_list",
                "kwargs": {"column_list": columns},
            }
        ],
        "meta": {} if meta is None else {"fedmap": meta},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def test_a_contract_may_live_outside_the_repository(tmp_path: Path) -> None:
    """task.contract as a path (relative to the file): the suite's columns and the recipe give
    the model's input size, indicators included; no code names the contract."""
    suite = _suite(
        tmp_path / "consortium" / "icu.json",
        ["id", "age", "lab", "unit", "died"],
        {"target": "died", "missing": ["-1"]},
    )
    task = {
        "contract": "consortium/icu.json",
        "target": "died",
        "drop": ["id"],
        "missing": ["-1"],
        "categorical": {"unit": [1, 2, 3]},
        "impute": "median",
        "missing_indicators": ["lab"],
    }
    config = load_federation(write(tmp_path, {**BASE, "task": task}))
    assert config.federation.task.suite == suite.resolve()
    assert config.contract == "icu"
    # age, lab, unit_2, unit_3, lab_missing
    assert config.model.n_features == 5
    contract = config.data_contract
    assert (contract.suite_path, contract.label, contract.na_values) == (suite, "died", ("-1",))
    # the suite's meta and the recipe must agree; the meta alone serves a standalone suite
    with pytest.raises(ConfigError, match=r"task.missing is \[\], but the contract's suite"):
        load_federation(write(tmp_path, {**BASE, "task": {**task, "missing": []}}))
    from site_tasks.site.contracts import contract_named

    assert contract_named(suite).label == "died"
    _suite(tmp_path / "bare.json", ["x", "label"], None)
    with pytest.raises(ValueError, match=r"meta\.fedmap names no target"):
        contract_named(tmp_path / "bare.json")


def test_an_unknown_site_names_the_federation(tmp_path: Path) -> None:
    config = load_federation(write(tmp_path, BASE))
    with pytest.raises(ConfigError, match="site 'site-09' is not in federation 'fed'"):
        config.site("site-09")


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "federations").glob("*.yaml")), ROOT / "infra/site/federation.example.yaml"],
    ids=lambda p: p.name,
)
def test_every_committed_federation_runs(path: Path) -> None:
    config = load_federation(path)
    assert config.name == read_federation(path).name and config.storage.bucket == "fedmap"


def test_the_demo_and_test_federations_load(
    tmp_path: Path, make_federation: Callable[..., Path]
) -> None:
    from site_tasks.local.demo import write_federation
    from site_tasks.local.stack import Stack

    demo = load_federation(write_federation(Stack(tmp_path), rounds=3, seed=0, data=tmp_path))
    assert (demo.rounds, demo.min_sites, demo.federation.schedule) == (3, 6, "@weekly")
    assert {s.tier for s in demo.sites.values()} == {1, 2, 3}
    made = load_federation(make_federation(n_sites=2, rounds=2, min_sites=2))
    assert (made.rounds, made.min_sites, made.device, len(made.sites)) == (2, 2, "cpu", 2)
    assert made.storage.endpoint_url is not None and made.storage.access_key_id is not None


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    from site_tasks.site.train import device_for

    if torch.cuda.is_available():
        assert device_for("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            device_for("cuda")
    assert device_for("auto").type in ("cpu", "cuda")
