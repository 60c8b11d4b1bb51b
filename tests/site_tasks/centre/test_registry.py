"""Registration in a real MLflow server: parent and nested runs with per-round metrics, versioned
models with tags and a signature, and the release gate's aliases."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from site_tasks.centre import server
from site_tasks.centre.registry import register
from site_tasks.federation import load_federation
from site_tasks.site.finalise import evaluate
from site_tasks.site.train import train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store


def test_register_runs_models_and_gate(
    make_federation: Callable[..., Path], mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    config = replace(load_federation(make_federation(n_sites=2, n_train=120, n_val=40)), rounds=2)
    store = S3Store(config.storage)
    store.ensure_bucket()
    server.init(config, store)
    for site in config.sites:
        validate(config, site, store)
    for t in (1, 2):
        for site in config.sites:
            train(config, site, t, store)
        server.aggregate(config, store, t)
    for site in config.sites:
        evaluate(config, store, site, 2)

    first = register(config, store, "dag-run-1", "abc123")
    assert first.alias == "champion" and first.prior_version == "1"
    assert first.site_versions == {"site-01": "1", "site-02": "1"}
    client = mlflow.MlflowClient()
    assert client.get_registered_model("fedmap-synthetic-label-skew-prior").aliases == {
        "champion": "1"
    }
    version = client.get_model_version("fedmap-synthetic-label-skew-site-01", "1")
    assert version.tags["dag_run_id"] == "dag-run-1" and version.tags["code_version"] == "abc123"
    assert json.loads(version.tags["validation"])["success"] is True
    import hashlib

    data = config.site("site-01").data
    assert json.loads(version.tags["data_files_sha256"]) == {
        name: hashlib.sha256((data / name).read_bytes()).hexdigest()
        for name in ("train.csv", "val.csv")
    }
    from site_tasks.site.versioning import dvc_dir_hash

    assert version.tags["data_version"] == dvc_dir_hash(data)
    prior_tags = client.get_model_version("fedmap-synthetic-label-skew-prior", "1").tags
    assert prior_tags["dag_run_id"] == "dag-run-1" and prior_tags["code_version"] == "abc123"
    assert json.loads(prior_tags["data_version"]) == {
        s: dvc_dir_hash(config.site(s).data) for s in ("site-01", "site-02")
    }
    assert json.loads(prior_tags["validation"])["site-02"]["success"] is True
    assert prior_tags["prior"] == "gaussian" and prior_tags["primary_metric"] == "accuracy"
    assert float(prior_tags["prior_mean_val_accuracy"]) >= 0.0  # the name the gate reads
    # equity: each site's gain over its local model, on the parent run and in the result
    evaluations = {
        s: json.loads(store.get(Keys.of(config).evaluation(s)) or b"{}")
        for s in ("site-01", "site-02")
    }
    gains = {
        s: e["personalised"]["accuracy"] - e["local"]["accuracy"] for s, e in evaluations.items()
    }
    assert first.equity is not None and first.equity["gains"] == pytest.approx(gains)
    worst = min(evaluations, key=lambda s: evaluations[s]["local"]["accuracy"])
    assert first.equity["worst_served"] == worst
    parent_metrics = client.get_run(first.parent_run_id).data.metrics
    assert parent_metrics["equity_worst_served_gain"] == pytest.approx(gains[worst])
    report = Path(client.download_artifacts(first.parent_run_id, "equity.md")).read_text()
    assert f"Worst-served site (lowest local accuracy): **{worst}**" in report
    # the pictures of the run: rounds x sites (with its numbers) and each site's gain
    artifacts = {a.path for a in client.list_artifacts(first.parent_run_id)}
    assert {"rounds_sites.png", "rounds_sites.json", "site_gain.png"} <= artifacts
    for picture in ("rounds_sites.png", "site_gain.png"):
        png = Path(client.download_artifacts(first.parent_run_id, picture)).read_bytes()
        assert png.startswith(b"\x89PNG")
    cells = json.loads(
        Path(client.download_artifacts(first.parent_run_id, "rounds_sites.json")).read_text()
    )["cells"]
    summary_2 = json.loads(store.get(Keys.of(config).summary(2)) or b"{}")
    assert [(c["round"], c["site"]) for c in cells] == [
        (t, s) for t in (1, 2) for s in ("site-01", "site-02")
    ]
    assert {c["site"]: c["weight"] for c in cells if c["round"] == 2} == summary_2["weights"]
    assert all(c["failure"] == "" and 0.0 <= c["metric"] <= 1.0 for c in cells)
    per_file = client.download_artifacts(first.parent_run_id, "data_files.json")
    assert set(json.loads(Path(per_file).read_text())) == {"site-01", "site-02"}
    info = mlflow.models.get_model_info("models:/fedmap-synthetic-label-skew-prior@champion")
    assert info.signature is not None and info.signature.inputs is not None
    assert info.signature.inputs.input_names()[:2] == ["x00", "x01"]

    # no pickle in the registry: the version is model code plus safetensors parameters
    local = Path(mlflow.artifacts.download_artifacts("models:/fedmap-synthetic-label-skew-prior/1"))
    files = sorted(p.name for p in local.rglob("*") if p.is_file())
    assert "params.safetensors" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pth", ".pt"))], files
    # ... that serves the final prior exactly, and that a tier-3 site downloads and checks
    import numpy as np
    import pandas as pd
    import torch

    from fedmap.messages import decode_params
    from fedmap.models import build_model, predict_proba
    from site_tasks.centre.registry import released_prior

    final = decode_params(store.get(Keys.of(config).prior(3)[0]) or b"")
    reference = build_model("mlp", 30)
    reference.load_state_dict(final)
    x = np.random.default_rng(0).standard_normal((5, 30))
    served = mlflow.pyfunc.load_model("models:/fedmap-synthetic-label-skew-prior@champion")
    expected = predict_proba(reference, torch.tensor(x, dtype=torch.float32)).numpy()
    got = served.predict(pd.DataFrame(x, columns=[f"x{j:02d}" for j in range(30)]))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)
    release = released_prior(config)
    assert release.version == "1" and release.name == "fedmap-synthetic-label-skew-prior"
    assert all(torch.equal(release.params[k], final[k]) for k in final)
    children = client.search_runs(
        [client.get_run(first.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'",
    )
    assert sorted(r.data.tags["site"] for r in children) == ["site-01", "site-02"]
    history = client.get_metric_history(children[0].info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert "gain_over_local_accuracy" in children[0].data.metrics
    # the clinical metrics and the validation counts reach the MLflow run too
    child = children[0].data.metrics
    assert {"final_auprc", "final_brier", "final_ece", "local_ece"} <= set(child)
    assert child["val_n_scored"] > 0 and child["val_n_dropped"] == 0
    assert client.get_run(first.parent_run_id).data.params["rounds"] == "2"

    # rerunning the same DAG run's registration adds nothing and reports the same versions
    again = register(config, store, "dag-run-1", "abc123")
    assert again == first
    assert [
        v.version
        for v in client.search_model_versions("name = 'fedmap-synthetic-label-skew-prior'")
    ] == ["1"]

    # a second run whose prior scores worse than the champion stays challenger
    evaluation = Keys.of(config).evaluation("site-01")
    worse = json.loads(store.get(evaluation) or b"{}")
    worse["prior"]["accuracy"] = 0.0
    store.put(evaluation, json.dumps(worse).encode())
    second = register(config, store, "dag-run-2", "abc123", tolerance=0.01)
    assert second.alias == "challenger" and second.prior_version == "2"
    assert "kept as challenger" in second.reason
    aliases = client.get_registered_model("fedmap-synthetic-label-skew-prior").aliases
    assert aliases == {"champion": "1", "challenger": "2"}


def test_round_cells_mark_rejected_and_missing_sites_and_withhold_under_privacy() -> None:
    from site_tasks.centre.registry import round_cells

    summaries = {
        1: {
            "contributed": ["a", "b"],
            "weights": {"a": 0.7, "b": 0.3},
            "metrics": {"a": {"val_accuracy": 0.9}, "b": {"val_accuracy": 0.6}},
            "rejected": {"c": "bad signature"},
        },
        2: {},  # never aggregated: no cells
    }
    cells = round_cells(summaries, ["a", "b", "c", "d"], "accuracy")
    assert [(c.site, c.weight, c.metric, c.failure) for c in cells] == [
        ("a", 0.7, 0.9, ""),
        ("b", 0.3, 0.6, ""),
        ("c", None, None, "rejected: bad signature"),
        ("d", None, None, "missing"),
    ]
    withheld = round_cells(summaries, ["a", "c"], "accuracy", withheld=True)
    assert [(c.weight, c.metric, c.failure) for c in withheld] == [
        (None, None, ""),
        (None, None, "rejected: bad signature"),
    ]
