"""Deployed rounds on real tabular tasks against the real local S3 server: a site reads its files
with the federation's task recipe (heart disease: dropped columns, missing values, one-hot
categorical columns; survival: time and event), trains, and reports the task's metrics."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedmap.data import read_site, standardise
from fedmap.messages import decode_params
from fedmap.tabular import read_tabular
from site_tasks.centre import server
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.local.sources import heart_disease_sites
from site_tasks.site.contracts import DataContractError
from site_tasks.site.finalise import evaluate
from site_tasks.site.train import prepare, train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store
from tests.site_tasks.tabular_data import HEART_SOURCE, federation_task, write_cox_site

HEART_SITES = ("cleveland", "hungarian", "va")


def _config(path: Path) -> tuple[FederationConfig, S3Store]:
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    return config, store


def heart(make_federation: Callable[..., Path], tmp_path: Path, **task: object) -> Path:
    """Three of FLamby's heart-disease centres under the federation file's own recipe."""
    folders = {f.name: f for f in heart_disease_sites(HEART_SOURCE, tmp_path / "heart")}
    return make_federation(
        task={**federation_task("heart_disease"), **task},
        algorithm={"method": "fedmap", "variance": 1.0, "rounds": 2, "epochs": 1, "lr": 0.01},
        sites={name: {"data": str(folders[name])} for name in HEART_SITES},
    )


def test_the_default_recipe_reads_a_synthetic_site_exactly_as_before(
    make_federation: Callable[..., Path],
) -> None:
    config, store = _config(make_federation(n_sites=1, n_train=100, n_val=40))
    server.init(config, store)
    assert validate(config, "site-01", store).success
    data = prepare(config, "site-01", 1, store).context.data
    before = standardise(read_site(config.site("site-01").data))
    for split in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(data, split), getattr(before, split)), split
    assert data.task == "binary"


def test_a_heart_disease_round_trains_on_the_one_hot_recipe(
    make_federation: Callable[..., Path], tmp_path: Path
) -> None:
    config, store = _config(heart(make_federation, tmp_path))
    assert config.model == config.model.__class__("logreg", 13)
    keys = Keys.of(config)
    server.init(config, store)
    for site in HEART_SITES:
        assert validate(config, site, store).success
        data = prepare(config, site, 1, store).context.data
        # 8 numeric columns and the indicators cp_2..cp_4, restecg_1, restecg_2: 13 features
        assert data.x_train.shape[1] == 13
        expected = read_tabular(config.site(site).data / "train.csv", config.recipe)
        assert expected.columns[-5:] == ("cp_2", "cp_3", "cp_4", "restecg_1", "restecg_2")
        manifest = train(config, site, 1, store).manifest
        assert manifest.num_examples == len(expected.y)  # rows with a '?' left are dropped
        assert set(manifest.metrics) >= {"val_accuracy", "val_balanced_accuracy", "val_roc_auc"}
        assert 0.0 <= manifest.metrics["val_accuracy"] <= 1.0
        theta = decode_params(store.get(keys.update(1, site)[0]) or b"")
        assert theta["head.weight"].shape == (1, 13)
    summary = server.aggregate(config, store, 1)
    assert summary.contributed == tuple(sorted(HEART_SITES))
    train(config, "cleveland", 2, store)  # round 2 from the site's own theta_1


def test_a_level_the_recipe_does_not_list_excludes_the_site_naming_row_and_column(
    make_federation: Callable[..., Path], tmp_path: Path
) -> None:
    """cp = 4 meets the contract (levels 1-4) but not a recipe that lists only 1-3."""
    levels = {"cp": [1, 2, 3], "restecg": [0, 1, 2]}
    config, store = _config(heart(make_federation, tmp_path, categorical=levels, n_features=12))
    server.init(config, store)
    assert validate(config, "cleveland", store).success
    with (config.site("cleveland").data / "train.csv").open(newline="") as f:
        header, *rows = list(csv.reader(f))
    kept = [j for j, c in enumerate(header) if c not in config.recipe.drop]
    first = next(  # the first row the recipe keeps (no '?' left) whose cp is 4
        i for i, r in enumerate(rows) if "?" not in [r[j] for j in kept] and float(r[2]) == 4
    )
    row = first + 2  # the file's line: the header is line 1
    with pytest.raises(DataContractError) as info:
        train(config, "cleveland", 1, store)
    message = str(info.value)
    assert message.startswith("cleveland: ")
    assert f"train.csv: row {row}, column 'cp': not one of the levels 1, 2, 3" in message
    assert not any("updates/" in k for k in store.list(""))


def test_a_survival_round_reports_the_c_index_and_evaluates_with_it(
    make_federation: Callable[..., Path], tmp_path: Path
) -> None:
    sites = {
        f"region-{k}": {"data": str(write_cox_site(tmp_path / f"region-{k}", 200, 80, k))}
        for k in range(2)
    }
    algorithm = {"variance": 30.0, "rounds": 1, "epochs": 2, "batch_size": 16, "lr": 0.05}
    path = make_federation(task=federation_task("tcga_brca"), algorithm=algorithm, sites=sites)
    config, store = _config(path)
    assert config.recipe.type == "survival"
    server.init(config, store)
    for site in sites:
        assert validate(config, site, store).success
        metrics = train(config, site, 1, store).manifest.metrics
        assert set(metrics) == {"train_nll", "prior_penalty", "val_c_index"}
        assert 0.65 < metrics["val_c_index"] <= 1.0  # the Cox model has learnt the risk
    server.aggregate(config, store, 1)
    result = evaluate(config, store, "region-0", 1)
    assert result.primary_metric == "c_index" and result.primary == result.personalised["c_index"]
    stored = json.loads(store.get(Keys.of(config).evaluation("region-0")) or b"{}")
    assert stored["primary_metric"] == "c_index"
    for model in ("personalised", "prior", "local"):
        assert set(stored[model]) == {"c_index"}
        assert 0.5 < stored[model]["c_index"] <= 1.0
