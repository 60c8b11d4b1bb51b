"""Federation files as ``fedmap.spec`` reads them: the two committed files, and every error names the
file and the key."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedmap.config import ConfigError
from fedmap.spec import AlgorithmSpec, load_spec, task_spec
from fedmap.training import LocalTraining

ROOT = Path(__file__).resolve().parents[2]
FEDERATIONS = ROOT / "federations"


def raw(name: str) -> dict[str, Any]:
    data = yaml.safe_load((FEDERATIONS / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_heart_disease_file() -> None:
    spec = load_spec(FEDERATIONS / "heart_disease.yaml")
    assert spec.name == "heart_disease"
    assert spec.path == FEDERATIONS / "heart_disease.yaml"
    assert (spec.task.contract, spec.task.model, spec.task.n_features) == (
        "fed_heart_disease",
        "logreg",
        13,
    )
    recipe = spec.task.recipe
    assert (recipe.type, recipe.target, recipe.time, recipe.positive_above) == (
        "binary",
        "num",
        None,
        0,
    )
    assert recipe.drop == ("slope", "ca", "thal")
    assert recipe.missing == ("?",)
    assert dict(recipe.categorical) == {"cp": (1.0, 2.0, 3.0, 4.0), "restecg": (0.0, 1.0, 2.0)}
    assert recipe.standardise is True
    assert [s.name for s in spec.sites] == ["cleveland", "hungarian", "switzerland", "va"]
    # site folders resolve against the file's own folder
    for site in spec.sites:
        assert site.data == (ROOT / "data" / "fed_heart_disease" / site.name)
        assert site.tier == 1
    assert spec.tier(1) == spec.sites and spec.tier(2, 3) == ()
    algo = spec.algorithm
    assert (algo.method, algo.rounds, algo.epochs, algo.batch_size, algo.lr, algo.seed) == (
        "fedmap",
        15,
        2,
        4,
        0.01,
        42,
    )
    assert algo.training == LocalTraining(epochs=2, batch_size=4, lr=0.01)
    assert algo.fedmap_options() == {
        "prior": "gaussian",
        "variance": 10.0,
        "input_variance": math.inf,
        "weighting": "omega",
        "min_variance": 10.0,
    }


def test_tcga_brca_file() -> None:
    spec = load_spec(FEDERATIONS / "tcga_brca.yaml")
    file = raw("tcga_brca")
    assert spec.name == "tcga_brca"
    assert (spec.task.model, spec.task.n_features) == ("logreg", 39)
    recipe = spec.task.recipe
    assert (recipe.type, recipe.target, recipe.time) == ("survival", "E", "T")
    assert recipe.targets == ("E", "T")
    assert recipe.drop == ("pid",)
    assert recipe.standardise is False and dict(recipe.categorical) == {}
    assert [s.name for s in spec.sites] == [f"region-{k}" for k in range(6)]
    options = spec.algorithm.fedmap_options()
    assert options == {
        "prior": file["algorithm"]["prior"],
        "variance": float(file["algorithm"]["variance"]),
        "input_variance": math.inf,
        "weighting": "omega",
        "min_variance": float(file["algorithm"]["variance"]),
    }
    assert isinstance(options["variance"], float)


def test_fedmap_options_types() -> None:
    algo = AlgorithmSpec(prior="icnn", variance=3, input_variance=None, weighting="samples")
    assert algo.fedmap_options() == {
        "prior": "icnn",
        "variance": 3.0,
        "input_variance": None,
        "weighting": "samples",
        "min_variance": 3.0,
    }
    assert isinstance(algo.fedmap_options()["variance"], float)
    assert AlgorithmSpec(variance=3, min_variance=0.5).fedmap_options()["min_variance"] == 0.5
    assert AlgorithmSpec(input_variance=2).fedmap_options()["input_variance"] == 2.0


def test_defaults_when_algorithm_is_absent(tmp_path: Path) -> None:
    data = raw("heart_disease")
    del data["algorithm"]
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).algorithm == AlgorithmSpec()


def edited(tmp_path: Path, name: str, edit: Any) -> Path:
    data = copy.deepcopy(raw(name))
    edit(data)
    path = tmp_path / f"{name}-edited.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(section: str, key: str, value: Any) -> Any:
    return lambda d: d[section].__setitem__(key, value)


def _del(section: str, key: str) -> Any:
    return lambda d: d[section].pop(key)


@pytest.mark.parametrize(
    ("name", "edit", "needles"),
    [
        ("heart_disease", _set("task", "typo", 1), ["unknown config key", "task.typo"]),
        ("heart_disease", _set("algorithm", "varaince", 2.0), ["algorithm.varaince"]),
        ("tcga_brca", _del("task", "time"), ["task", "survival task needs time"]),
        ("heart_disease", _set("task", "time", "T"), ["time is only for survival"]),
        ("heart_disease", _set("task", "type", "regression"), ["type must be one of"]),
        ("heart_disease", _del("task", "contract"), ["task.contract is required"]),
        ("heart_disease", _set("task", "model", "resnet"), ["task.model must be one of"]),
        ("heart_disease", _set("task", "n_features", 0), ["task.n_features must be a positive"]),
        ("heart_disease", _set("task", "categorical", ["cp"]), ["task.categorical: expected"]),
        ("heart_disease", _set("task", "categorical", {"cp": 4}), ["task.categorical: expected"]),
        ("heart_disease", _set("task", "drop", "slope"), ["task.drop: expected a list"]),
        ("heart_disease", _set("algorithm", "seed", 1.5), ["algorithm.seed must be an integer"]),
        ("heart_disease", _set("algorithm", "seed", True), ["algorithm.seed must be an integer"]),
        ("heart_disease", _set("algorithm", "batch_size", 0), ["algorithm: "]),
        ("heart_disease", _set("algorithm", "lr", -1.0), ["algorithm: "]),
        ("heart_disease", _set("sites", "extra", {"tier": 1}), ["sites.extra.data is required"]),
        ("heart_disease", _set("sites", "extra", {"data": "x", "tier": 4}), ["sites.extra.tier"]),
        ("heart_disease", lambda d: d.__setitem__("sites", {}), ["sites: expected a mapping"]),
        ("heart_disease", lambda d: d.pop("name"), ["name is required"]),
        ("heart_disease", lambda d: d.__setitem__("task", [1]), ["task: expected a mapping"]),
        ("heart_disease", lambda d: d.__setitem__("algorithm", [1]), ["algorithm: expected"]),
    ],
)
def test_errors_name_the_file_and_key(
    tmp_path: Path, name: str, edit: Any, needles: list[str]
) -> None:
    path = edited(tmp_path, name, edit)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: "), text
    for needle in needles:
        assert needle in text, text


def test_deployment_keys_are_not_read_here(tmp_path: Path) -> None:
    """run, min_sites, storage, mlflow, a site's queue: the DAG's, accepted and ignored."""
    path = edited(
        tmp_path, "heart_disease", lambda d: d.update(run="r1", device="cpu", schedule=None)
    )
    assert load_spec(path).name == "heart_disease"


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read the federation file"):
        load_spec(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: cannot read the federation file"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match=r"scalar\.yaml: expected a mapping at the top level"):
        load_spec(scalar)


def test_task_spec_defaults() -> None:
    spec = task_spec({"contract": "synthetic"})
    assert (spec.model, spec.n_features) == ("mlp", 30)
    assert spec.recipe.type == "binary" and spec.recipe.target == "label"
    assert spec.recipe.categorical == {}
