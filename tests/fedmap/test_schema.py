"""The federation file as ``fedmap.schema`` reads it: every committed file, each key's default,
and every error names the file and the key. Without torch, pandas, numpy or Airflow."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedmap import schema
from fedmap.schema import (
    AlgorithmSpec,
    ConfigError,
    Federation,
    Mlflow,
    Site,
    Storage,
    read_federation,
    task_spec,
)

ROOT = Path(__file__).resolve().parents[2]
FEDERATIONS = ROOT / "federations"
EXAMPLE = ROOT / "infra" / "site" / "federation.example.yaml"
COMMITTED = sorted(
    [
        *FEDERATIONS.glob("*.yaml"),
        EXAMPLE,
        *(ROOT / "infra").glob("*/federations/*.yaml"),
    ]
)
BASE: dict[str, Any] = {
    "name": "fed",
    "run": "run-1",
    "task": {"contract": "synthetic"},
    "storage": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"},
    "sites": {"site-01": {"data": "data/site-01"}},
}


def raw(name: str) -> dict[str, Any]:
    data = yaml.safe_load((FEDERATIONS / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def write(tmp_path: Path, body: dict[str, Any], name: str = "federation") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_importing_the_schema_loads_no_heavy_package() -> None:
    """The DAG file imports it at parse time: the standard library and PyYAML only."""
    child = (
        "import json, sys\n"
        "import fedmap.schema\n"
        "heavy = ('torch', 'pandas', 'numpy', 'airflow')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_federation_file_loads(path: Path) -> None:
    federation = read_federation(path)
    body = yaml.safe_load(path.read_text())
    assert federation.path == path and federation.name == body["name"]
    assert [s.name for s in federation.sites] == list(body["sites"])
    assert federation.require_storage().bucket == body["storage"]["bucket"]


def test_the_committed_files_are_all_found() -> None:
    assert {p.name for p in COMMITTED} >= {
        "heart_disease.yaml",
        "tcga_brca.yaml",
        "federation.example.yaml",
    }


def test_heart_disease_file() -> None:
    fed = read_federation(FEDERATIONS / "heart_disease.yaml")
    assert fed.name == "heart_disease"
    assert fed.path == FEDERATIONS / "heart_disease.yaml"
    assert (fed.task.contract, fed.task.model, fed.task.n_features) == (
        "fed_heart_disease",
        "logreg",
        13,
    )
    recipe = fed.task.recipe
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
    assert [s.name for s in fed.sites] == ["cleveland", "hungarian", "switzerland", "va"]
    # site folders resolve against the file's own folder; each site has its own queue
    for site in fed.sites:
        assert site.data == (ROOT / "data" / "fed_heart_disease" / site.name)
        assert (site.tier, site.queue, site.output) == (1, site.name, None)
    assert fed.tier(1) == fed.sites and fed.tier(2, 3) == ()
    algo = fed.algorithm
    assert (algo.method, algo.rounds, algo.epochs, algo.batch_size, algo.lr, algo.seed) == (
        "fedmap",
        15,
        2,
        4,
        0.01,
        42,
    )
    assert fed.rounds == 15
    assert algo.fedmap_options() == {
        "prior": "gaussian",
        "variance": 10.0,
        "input_variance": math.inf,
        "weighting": "omega",
        "min_variance": 10.0,
    }
    # the deployment keys, with their defaults
    assert (fed.run, fed.min_sites, fed.schedule, fed.device) == ("manual", 3, None, "auto")
    assert fed.storage == Storage(bucket="fedmap", connection="fedmap_s3")
    assert fed.mlflow == Mlflow(connection="fedmap_mlflow")
    assert fed.state_dir == FEDERATIONS / ".state" / "site-state"


def test_tcga_brca_file() -> None:
    fed = read_federation(FEDERATIONS / "tcga_brca.yaml")
    file = raw("tcga_brca")
    assert fed.name == "tcga_brca"
    assert (fed.task.model, fed.task.n_features) == ("logreg", 39)
    recipe = fed.task.recipe
    assert (recipe.type, recipe.target, recipe.time) == ("survival", "E", "T")
    assert recipe.targets == ("E", "T")
    assert recipe.drop == ("pid",)
    assert recipe.standardise is False and dict(recipe.categorical) == {}
    assert [s.name for s in fed.sites] == [f"region-{k}" for k in range(6)]
    assert (fed.rounds, fed.min_sites) == (5, 4)
    options = fed.algorithm.fedmap_options()
    assert options == {
        "prior": file["algorithm"]["prior"],
        "variance": float(file["algorithm"]["variance"]),
        "input_variance": math.inf,
        "weighting": "omega",
        "min_variance": float(file["algorithm"]["variance"]),
    }
    assert isinstance(options["variance"], float)


def test_the_site_example_has_every_tier_and_absolute_folders() -> None:
    fed = read_federation(EXAMPLE)
    assert [len(fed.tier(t)) for t in (1, 2, 3)] == [3, 1, 1]
    assert fed.tier(1, 2) == fed.sites[:4]
    (clinic,) = fed.tier(3)
    assert clinic == Site(
        "clinic-7",
        Path("/secure/fedmap/clinic-7"),
        3,
        "clinic-7",
        Path("/secure/fedmap-output/clinic-7"),
    )
    assert fed.site("switzerland").tier == 2
    assert (fed.schedule, fed.min_sites, fed.state_dir) == ("@weekly", 2, Path("/var/lib/fedmap"))
    assert fed.algorithm.training.batch_size == 64  # LocalTraining, imported when asked for


def test_defaults_when_optional_keys_are_absent(tmp_path: Path) -> None:
    body = {"name": "x", "task": {"contract": "c"}, "sites": {"a": {"data": "a"}}}
    fed = read_federation(write(tmp_path, body))
    assert fed == Federation(
        path=tmp_path / "federation.yaml",
        name="x",
        task=task_spec({"contract": "c"}),
        algorithm=AlgorithmSpec(),
        sites=(Site("a", (tmp_path / "a").resolve()),),
        state_dir=(tmp_path / ".state" / "site-state").resolve(),
    )
    assert fed.storage is None and fed.mlflow == Mlflow() and fed.run == "manual"


def test_a_deployment_needs_storage(tmp_path: Path) -> None:
    body = {k: v for k, v in BASE.items() if k != "storage"}
    path = write(tmp_path, body)
    fed = read_federation(path)  # the simulator needs no bucket
    with pytest.raises(ConfigError, match=rf"^{path}: missing key 'storage'"):
        fed.require_storage()


def test_an_unknown_site_names_the_federation(tmp_path: Path) -> None:
    fed = read_federation(write(tmp_path, BASE))
    assert fed.site("site-01").data == (tmp_path / "data" / "site-01").resolve()
    with pytest.raises(ConfigError, match=r"site 'site-09' is not in federation 'fed' \(site-01\)"):
        fed.site("site-09")


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


def test_training_is_the_local_step_of_the_section() -> None:
    from fedmap.training import LocalTraining

    algo = AlgorithmSpec(epochs=2, batch_size=4, lr=0.5)
    assert algo.training == LocalTraining(epochs=2, batch_size=4, lr=0.5)
    decaying = AlgorithmSpec(lr=0.5, lr_final=0.05).training
    assert decaying == LocalTraining(lr=0.5, lr_final=0.05) and decaying.at(1, 10).lr == 0.5


def test_the_names_are_the_libraries_own() -> None:
    from fedmap.models import MODEL_NAMES, build_model

    assert MODEL_NAMES == schema.MODEL_NAMES == ("logreg", "mlp", "mlp-bn")
    for name in schema.MODEL_NAMES:
        build_model(name, 3)


def test_defaults_when_algorithm_is_absent(tmp_path: Path) -> None:
    data = raw("heart_disease")
    del data["algorithm"]
    assert read_federation(write(tmp_path, data)).algorithm == AlgorithmSpec()


def _set(section: str, key: str, value: Any) -> Any:
    return lambda d: d[section].__setitem__(key, value)


def _del(section: str, key: str) -> Any:
    return lambda d: d[section].pop(key)


def _top(**change: Any) -> Any:
    return lambda d: d.update(change)


@pytest.mark.parametrize(
    ("name", "edit", "needle"),
    [
        # the top level
        ("heart_disease", _top(rnds=2), "unknown key(s) rnds (known: algorithm, bounds, device,"),
        ("heart_disease", _top(fedmap={"variance": 1}), "unknown key(s) fedmap"),
        ("heart_disease", lambda d: d.pop("name"), "missing key 'name'"),
        ("heart_disease", lambda d: d.pop("task"), "missing key 'task'"),
        ("heart_disease", lambda d: d.pop("sites"), "missing key 'sites'"),
        ("heart_disease", _top(name="heart disease"), "name must be 1-63 letters"),
        ("heart_disease", _top(run="bad name!"), "run must be 1-63 letters"),
        ("heart_disease", _top(bounds={"max_weight": 1.5}), "bounds.max_weight must be in (0, 1]"),
        ("heart_disease", _top(bounds={"max_update_norm": 0}), "bounds.max_update_norm must be"),
        ("heart_disease", _top(bounds={"cap": 1}), "unknown config key(s): bounds.cap"),
        ("heart_disease", _top(trust={"keys": "k"}), "unknown config key(s): trust.keys"),
        (
            "heart_disease",
            lambda d: d["sites"].update(centre={"data": "x"}),
            "sites.centre: 'centre' cannot name a site",
        ),
        ("heart_disease", _top(task=[1]), "task must be a mapping, got [1]"),
        ("heart_disease", _top(task="synthetic"), "task must be a mapping"),
        ("heart_disease", _top(algorithm=[1]), "algorithm must be a mapping"),
        ("heart_disease", _top(storage="b"), "storage must be a mapping"),
        ("heart_disease", _top(mlflow="x"), "mlflow must be a mapping"),
        ("heart_disease", _top(min_sites=5), "min_sites must be between 1 and the 4 tier-1 sites"),
        ("heart_disease", _top(min_sites=0), "min_sites must be between"),
        ("heart_disease", _top(schedule=7), "schedule must be a cron expression"),
        ("heart_disease", _top(device="gpu"), "device must be cpu, cuda or auto, got 'gpu'"),
        ("heart_disease", _top(state_dir=3), "state_dir must be a folder"),
        # task
        ("heart_disease", _set("task", "typo", 1), "unknown config key(s): task.typo"),
        ("heart_disease", _set("task", "modle", "mlp"), "task.modle"),
        # the suite's meta.fedmap names T, so only an explicit empty time is left without one
        ("tcga_brca", _set("task", "time", None), "task: a survival task needs time"),
        ("heart_disease", _set("task", "time", "T"), "time is only for survival"),
        ("heart_disease", _set("task", "type", "regression"), "type must be one of"),
        ("heart_disease", _del("task", "contract"), "task.contract is required"),
        ("heart_disease", _set("task", "model", "resnet"), "task.model must be one of"),
        ("heart_disease", _set("task", "n_features", 0), "task.n_features must be a positive"),
        ("heart_disease", _set("task", "categorical", ["cp"]), "task.categorical: expected"),
        ("heart_disease", _set("task", "categorical", {"cp": 4}), "task.categorical: expected"),
        ("heart_disease", _set("task", "drop", "slope"), "task.drop: expected a list"),
        # algorithm
        ("heart_disease", _set("algorithm", "varaince", 2.0), "algorithm.varaince"),
        ("heart_disease", _set("algorithm", "seed", 1.5), "algorithm.seed must be an integer"),
        ("heart_disease", _set("algorithm", "seed", True), "algorithm.seed must be an integer"),
        ("heart_disease", _set("algorithm", "seed", "abc"), "algorithm.seed must be an integer"),
        ("heart_disease", _set("algorithm", "batch_size", 0), "algorithm: invalid local training"),
        ("heart_disease", _set("algorithm", "lr", -1.0), "algorithm: invalid local training"),
        ("heart_disease", _set("algorithm", "epochs", 1.5), "algorithm: invalid local training"),
        ("heart_disease", _set("algorithm", "rounds", 0), "algorithm.rounds must be a positive"),
        ("heart_disease", _set("algorithm", "lr_final", 0.5), "algorithm.lr_final must be a"),
        ("heart_disease", _set("algorithm", "lr_final", 0), "algorithm.lr_final must be a"),
        ("heart_disease", _set("algorithm", "lr_final", "x"), "algorithm.lr_final must be a"),
        ("heart_disease", _set("algorithm", "prior", "laplace"), "algorithm.prior must be one of"),
        # sites
        ("heart_disease", _top(sites={}), "sites must map each site name to {data: FOLDER}"),
        ("heart_disease", _set("sites", "extra", {"tier": 1}), "sites.extra.data is required"),
        ("heart_disease", _set("sites", "extra", {"data": 1}), "sites.extra.data must be a folder"),
        ("heart_disease", _set("sites", "extra", "x"), "sites.extra must be {data: FOLDER,"),
        ("heart_disease", _set("sites", "site 01", {"data": "x"}), "sites.site 01 must be 1-63"),
        ("heart_disease", _set("sites", "x", {"data": "x", "tier": 4}), "sites.x.tier must be 1,"),
        ("heart_disease", _set("sites", "x", {"data": "x", "tier": True}), "sites.x.tier"),
        ("heart_disease", _set("sites", "x", {"data": "x", "queue": "a b"}), "sites.x.queue"),
        ("heart_disease", _set("sites", "x", {"data": "x", "typo": 1}), "unknown key(s) sites.x."),
        (
            "heart_disease",
            _set("sites", "x", {"data": "x", "output": "y"}),
            "sites.x.output is a folder, and only tier-3 sites write predictions",
        ),
        # storage and mlflow
        ("heart_disease", _set("storage", "endpont_url", "x"), "storage.endpont_url"),
        ("heart_disease", _top(storage={"region": "x"}), "storage.bucket is required"),
        ("heart_disease", _set("storage", "connection", "bad id!"), "storage.connection must be"),
        ("heart_disease", _set("mlflow", "tracking_url", "x"), "mlflow.tracking_url"),
        ("heart_disease", _set("mlflow", "connection", "a/b"), "mlflow.connection must be"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, name: str, edit: Any, needle: str) -> None:
    data = copy.deepcopy(raw(name))
    edit(data)
    path = write(tmp_path, data, f"{name}-edited")
    with pytest.raises(ConfigError) as exc:
        read_federation(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: "), text
    assert needle in text, text


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read the federation file"):
        read_federation(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: cannot read the federation file"):
        read_federation(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match=r"scalar\.yaml: expected a mapping at the top level"):
        read_federation(scalar)


def test_what_the_task_leaves_out_the_suite_says(tmp_path: Path) -> None:
    """One place: target, time and missing tokens from the suite's meta.fedmap when the task
    section does not give them; given, the task's own win (site_tasks checks they agree)."""
    suite = tmp_path / "icu.json"
    meta = {"fedmap": {"target": "died", "time": None, "missing": ["-1"]}}
    suite.write_text(json.dumps({"name": "icu", "expectations": [], "meta": meta}))
    spec = task_spec({"contract": "icu.json"}, tmp_path)
    assert (spec.recipe.target, spec.recipe.missing, spec.recipe.type) == (
        "died",
        ("-1",),
        "binary",
    )
    assert task_spec({"contract": "icu.json", "target": "y"}, tmp_path).recipe.target == "y"
    tcga = task_spec({"contract": "fed_tcga_brca"})  # a committed suite, by name
    assert (tcga.recipe.type, tcga.recipe.target, tcga.recipe.time) == ("survival", "E", "T")


def test_task_spec_defaults() -> None:
    spec = task_spec({"contract": "synthetic"})
    assert (spec.model, spec.n_features, spec.suite) == ("mlp", None, None)
    assert spec.recipe.type == "binary" and spec.recipe.target == "label"
    assert spec.recipe.categorical == {}
