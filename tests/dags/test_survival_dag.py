"""A survival federation through the whole DAG against the real local S3 and MLflow servers: the
TCGA-BRCA federation file's recipe on three synthetic Cox sites, two rounds; the C-index is the
metric everywhere (updates, evaluations, gate), the served model returns risk scores, and the
register task reports the equity of the run."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.site_tasks.tabular_data import federation_task, write_cox_site

LoadDags = Callable[[Path, pytest.MonkeyPatch], ModuleType]  # the fixture in conftest.py
SITES = ("region-0", "region-1", "region-2")
SIZES = {"region-0": (200, 80), "region-1": (120, 60), "region-2": (60, 40)}


def survival_folder(tmp_path: Path, s3_server: Any, mlflow_server: str) -> Path:
    """federations/surv.yaml: fed_tcga_brca's task section, three tier-1 Cox sites."""
    sites = {}
    for k, site in enumerate(SITES):
        n_train, n_val = SIZES[site]
        write_cox_site(tmp_path / "data" / site, n_train, n_val, k)
        sites[site] = {"data": f"../data/{site}", "tier": 1, "queue": site}
    body = {
        "name": "surv",
        "task": federation_task("tcga_brca"),
        "algorithm": {
            "method": "fedmap",
            "prior": "gaussian",
            "variance": 30.0,
            "rounds": 2,
            "epochs": 1,
            "batch_size": 16,
            "lr": 0.05,
        },
        "sites": sites,
        "min_sites": 2,
        "storage": {
            "bucket": f"fedmap-{uuid.uuid4().hex[:12]}",
            "endpoint_url": s3_server.url,
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
        },
        "mlflow": {"tracking_uri": mlflow_server},
        "device": "cpu",
        "state_dir": "../site-state",
    }
    folder = tmp_path / "federations"
    folder.mkdir()
    (folder / "surv.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return folder


def test_a_survival_federation_runs_registers_and_reports_equity(
    airflow_db: None,
    tmp_path: Path,
    s3_server: Any,
    mlflow_server: str,
    monkeypatch: pytest.MonkeyPatch,
    load_dags: LoadDags,
) -> None:
    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from fedmap.messages import decode_params
    from fedmap.metrics import predict_output
    from fedmap.models import build_model
    from site_tasks.centre.registry import model_columns
    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.storage import Keys, S3Store

    folder = survival_folder(tmp_path, s3_server, mlflow_server)
    dag = load_dags(folder, monkeypatch).__dict__["fedmap_surv"]
    run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["register"] == "success" and states["release"] == "success"

    config = load_federation(folder / "surv.yaml")
    store = S3Store(config.storage)
    keys = Keys(config.name, run_name(run.run_id))
    evaluations = {s: json.loads(store.get(keys.evaluation(s)) or b"{}") for s in SITES}
    for site, evaluation in evaluations.items():
        assert evaluation["primary_metric"] == "c_index", site
        for model in ("personalised", "prior", "local"):
            assert set(evaluation[model]) == {"c_index"}
            assert 0.0 <= evaluation[model]["c_index"] <= 1.0
        manifest = json.loads(store.get(keys.update(2, site)[1]) or b"{}")
        assert "val_c_index" in manifest["metrics"] and "val_accuracy" not in manifest["metrics"]

    # the register task's return value (XCom) carries the equity summary
    register = next(ti for ti in run.get_task_instances() if ti.task_id == "register")
    result = register.xcom_pull(task_ids="register")
    assert result["alias"] == "champion"
    equity = result["equity"]
    local = {s: e["local"]["c_index"] for s, e in evaluations.items()}
    own = {s: e["personalised"]["c_index"] for s, e in evaluations.items()}
    assert equity["metric"] == "c_index"
    assert equity["worst_served"] == min(local, key=lambda s: local[s])
    assert equity["gains"] == pytest.approx({s: own[s] - local[s] for s in SITES})
    worst = equity["worst_served"]
    assert equity["worst_served_gain"] == pytest.approx(own[worst] - local[worst])
    assert equity["spread_range"] == pytest.approx(max(own.values()) - min(own.values()))
    assert equity["spread_std"] == pytest.approx(float(np.std(list(own.values()), ddof=1)))

    # MLflow: the parent run's equity metrics and report, the gate on the mean C-index
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("fedmap-surv")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.dag_run_id = '{run.run_id}'"
    )
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    metrics = parent.data.metrics
    assert metrics["equity_worst_served_gain"] == pytest.approx(equity["worst_served_gain"])
    assert metrics["equity_spread_std"] == pytest.approx(equity["spread_std"])
    mean_prior = float(np.mean([e["prior"]["c_index"] for e in evaluations.values()]))
    assert metrics["prior_mean_val_c_index"] == pytest.approx(mean_prior)
    report = Path(client.download_artifacts(parent.info.run_id, "equity.md")).read_text()
    assert f"Worst-served site (lowest local c-index): **{worst}**" in report
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_c_index")] == [
            1,
            2,
        ]
        assert "final_c_index" in child.data.metrics
        assert "gain_over_local_c_index" in child.data.metrics
    version = client.get_model_version("fedmap-surv-prior", result["prior_version"])
    assert version.tags["primary_metric"] == "c_index" and version.tags["task"] == "survival"
    assert float(version.tags["prior_mean_val_c_index"]) == pytest.approx(mean_prior, abs=1e-6)
    assert result["reason"] == "no champion yet"

    # the served model returns the log relative risk of the final prior, not a probability
    final = decode_params(store.get(keys.prior(3)[0]) or b"")
    reference = build_model("logreg", 39)
    reference.load_state_dict(final)
    info = mlflow.models.get_model_info("models:/fedmap-surv-prior@champion")
    assert info.signature is not None and info.signature.inputs is not None
    columns = model_columns(config)
    assert info.signature.inputs.input_names() == columns
    assert columns[0] == "age_at_index" and "pid" not in columns and "T" not in columns
    x = np.random.default_rng(0).integers(0, 2, (6, 39)).astype(float)
    x[:, 0] = [35, 45, 55, 65, 75, 85]
    served = mlflow.pyfunc.load_model("models:/fedmap-surv-prior@champion")
    got = np.asarray(served.predict(pd.DataFrame(x, columns=columns)))
    want = predict_output(reference, torch.tensor(x, dtype=torch.float32), "survival").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # the gate compares the mean C-index: a prior that ranks worse stays challenger
    from dataclasses import replace

    from site_tasks.centre.registry import register

    for site, evaluation in evaluations.items():
        evaluation["prior"]["c_index"] = 0.0
        store.put(keys.evaluation(site), json.dumps(evaluation).encode())
    this_run = replace(config, run=run_name(run.run_id))
    second = register(this_run, store, "survival-rerun", "abc123", tolerance=0.01)
    assert second.alias == "challenger"
    assert second.reason.startswith("mean validation c_index 0.0000 is more than 0.01 below")
