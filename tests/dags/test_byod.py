"""docs/byod.md end to end, as a new consortium walks it: CSV folders with missing values, a
contract drafted from one site's files and kept outside the repository, a federation file that
imputes, a local check without storage, a simulation, then the scheduled DAG. No code changes."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

LoadDags = Callable[[Path, pytest.MonkeyPatch], ModuleType]
HEADER = ["stay_id", "age", "sbp", "lactate", "unit", "died"]
SITES = {"north": 0.0, "south": 0.4, "east": -0.3}


def write_site(folder: Path, shift: float, seed: int, n_train: int = 160, n_val: int = 60) -> int:
    """An ICU site's two files as they come: a stay id, lactate missing for about 40% of rows
    ("NA" or an empty cell), sbp missing for about 10%; mortality rises with age and lactate.
    Returns how many validation rows have a missing value."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    gaps = 0
    for name, n in (("train.csv", n_train), ("val.csv", n_val)):
        age = rng.integers(20, 90, n)
        lactate = rng.gamma(2.0, 1.0 + shift / 2, n)  # a site-specific case mix, always > 0
        sbp = rng.normal(120, 15, n)
        unit = rng.integers(1, 4, n)
        risk = 0.05 * (age - 60) + 0.8 * (lactate - 2) - 1.0
        died = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(int)
        died[:2] = (0, 1)  # both classes in every file
        rows = []
        for i in range(n):
            lab = (
                "" if rng.random() < 0.2 else ("NA" if rng.random() < 0.25 else f"{lactate[i]:.2f}")
            )
            pressure = "NA" if rng.random() < 0.1 else f"{sbp[i]:.0f}"
            gaps += name == "val.csv" and (lab in ("", "NA") or pressure == "NA")
            rows.append([f"{seed}{i:04d}", age[i], pressure, lab, unit[i], died[i]])
        with (folder / name).open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([HEADER, *rows])
    return gaps


def test_csv_folders_to_a_validated_simulated_and_scheduled_federation(
    tmp_path: Path,
    s3_server: Any,
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
    load_dags: LoadDags,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fedmap.cli import main as fedmap_main
    from site_tasks.cli import main as site_task

    gaps = {
        s: write_site(tmp_path / "hospitals" / s, shift, k)
        for k, (s, shift) in enumerate(SITES.items())
    }
    assert all(g > 10 for g in gaps.values())  # each site has patients with a missing lab

    # 1. one site drafts the contract from its own files; the consortium keeps it in its repo
    suite = tmp_path / "consortium" / "contracts" / "icu.json"
    suite.parent.mkdir(parents=True)
    argv = ["contract", "init", "--data", str(tmp_path / "hospitals" / "north")]
    assert site_task([*argv, "--target", "died", "--missing", "NA", "--out", str(suite)]) == 0
    drafted = json.loads(suite.read_text())
    assert drafted["meta"]["fedmap"]["missing"] == ["NA"]
    # the review: the draft's ranges are one site's, widened; the consortium sets clinical ones
    plausible = {"age": (18, 110), "sbp": (40, 250), "lactate": (0, 30)}
    for rule in drafted["expectations"]:
        column = rule["kwargs"].get("column")
        if rule["type"] == "expect_column_values_to_be_between" and column in plausible:
            rule["kwargs"]["min_value"], rule["kwargs"]["max_value"] = plausible[column]
    suite.write_text(json.dumps(drafted, indent=2))

    # 2. the federation file: no storage yet, a contract by path, imputation on
    federations = tmp_path / "federations"
    federations.mkdir()
    body: dict[str, Any] = {
        "name": "icu",
        "schedule": "@weekly",
        "task": {
            # target and missing tokens: said once, by the suite's meta.fedmap
            "contract": "../consortium/contracts/icu.json",
            "drop": ["stay_id"],
            "categorical": {"unit": [1, 2, 3]},
            "impute": "median",
            "missing_indicators": ["sbp", "lactate"],
            "model": "logreg",
        },
        "algorithm": {"rounds": 2, "epochs": 1, "batch_size": 16, "lr": 0.05, "variance": 1.0},
        "sites": {s: {"data": f"../hospitals/{s}", "queue": s} for s in SITES},
        "min_sites": 2,
        "state_dir": "../site-state",
    }
    file = federations / "icu.yaml"
    file.write_text(yaml.safe_dump(body, sort_keys=False))

    # 3. each hospital checks its data locally: printed, nothing kept or uploaded
    capsys.readouterr()
    for site in SITES:
        assert site_task(["validate", "--federation", str(file), "--site", site]) == 0
    out = capsys.readouterr()
    assert out.out.count("data meets the 'icu' contract") == 3
    assert "nothing was uploaded" in out.err
    assert not (tmp_path / "site-state").exists()

    # 4. simulate on one laptop: every validation patient is scored, none dropped
    results = tmp_path / "out"
    argv = ["simulate", "--federation", str(file), "--methods", "fedmap,individual"]
    assert fedmap_main([*argv, "--out", str(results)]) == 0
    records = json.loads((results / "results.json").read_text())
    assert {r["site"]: r["n_scored"] for r in records} == dict.fromkeys(SITES, 60)
    assert all({"roc_auc", "auprc", "brier", "ece"} <= set(r) for r in records)
    assert (results / "reliability.png").is_file()

    # 5. schedule it: storage joins the file, and the DAG runs every round over the same files
    body["storage"] = {
        "bucket": "icu-byod",
        "endpoint_url": s3_server.url,
        "access_key_id": s3_server.access_key,
        "secret_access_key": s3_server.secret_key,
    }
    file.write_text(yaml.safe_dump(body, sort_keys=False))
    from site_tasks import trust
    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.storage import Keys, S3Store

    config = load_federation(file)
    assert (config.target, config.recipe.missing) == ("died", ("NA",))
    # age, sbp, lactate, unit_2, unit_3, sbp_missing, lactate_missing
    assert config.model.n_features == 7
    trust.enrol_all(config)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dag = load_dags(federations, monkeypatch).__dict__["fedmap_icu"]
    assert dag.schedule == "@weekly"  # on the file's schedule
    run = dag.test()
    assert str(run.state) == "success"
    store = S3Store(config.storage)
    keys = Keys(config.name, run_name(run.run_id))
    for site in SITES:
        evaluation = json.loads(store.get(keys.evaluation(site)) or b"{}")
        assert (evaluation["n_scored"], evaluation["n_dropped"]) == (60, 0)
        assert evaluation["n_imputed"] == gaps[site]
        assert 0.0 <= evaluation["personalised"]["roc_auc"] <= 1.0
