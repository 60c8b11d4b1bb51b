"""The federation DAG under a ``privacy`` section (DP and secure aggregation together), with the
real S3 and MLflow servers: epsilon per round in the summary, the Airflow log and the MLflow run;
only the opted-in site's model registered; a second run that reaches the budget stops early and
registers what it has."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.dags.test_federation_dag import LoadDags, _states, federation_folder, with_connections

pytestmark = [pytest.mark.privacy, pytest.mark.exhaustive]  # 80 s: run with -m privacy


def test_a_private_run_states_epsilon_registers_opt_ins_and_stops_at_the_budget(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    mlflow_server: str,
    s3_server: Any,
    load_dags: LoadDags,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import mlflow

    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.storage import Keys, S3Store

    caplog.set_level("INFO", logger="site_tasks")
    section = {
        "epsilon": 4.3,  # 2 rounds at z = 2 spend 3.19; 3 rounds 4.01; 4 rounds 4.73
        "noise_multiplier": 2.0,
        "clip": 1.0,
        "secure_aggregation": "ckks",
        "register_personal": ["site-01"],
    }
    folder = federation_folder(
        make_federation, n_sites=3, n_train=120, n_val=40, rounds=2, min_sites=2, privacy=section
    )
    file = with_connections(folder, "dag-private", monkeypatch, s3_server, mlflow_server)
    run = load_dags(folder, monkeypatch).__dict__["fedmap_dag-private"].test()
    assert str(run.state) == "success", _states(run)
    logged = capfd.readouterr().out + caplog.text  # the aggregate task's log (Airflow: stdout)
    assert "round 2: privacy: epsilon 3.189 of budget 4.3" in logged

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    config = load_federation(file)
    store = S3Store(config.storage)
    keys = Keys(config.name, run_name(run.run_id))
    spent = [json.loads(store.get(keys.summary(t)) or b"")["privacy"]["epsilon"] for t in (1, 2)]
    assert spent == pytest.approx([2.1657, 3.1890], abs=1e-3)

    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    assert client.get_registered_model("fedmap-dag-private-prior").aliases == {"champion": "1"}
    prior = client.get_model_version("fedmap-dag-private-prior", "1").tags
    assert "/released/" in prior["prior_key"]  # a site's signed decryption: the centre has no key
    assert client.get_registered_model("fedmap-dag-private-site-01").latest_versions
    for site in ("site-02", "site-03"):  # did not opt in: no model of theirs in the registry
        assert not client.search_model_versions(f"name = 'fedmap-dag-private-{site}'")
    experiment = client.get_experiment_by_name("fedmap-dag-private")
    assert experiment is not None
    parent = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.dag_run_id = '{run.run_id}' and attributes.run_name = '{run_name(run.run_id)}'",
    )[0]
    history = client.get_metric_history(parent.info.run_id, "privacy_epsilon")
    assert [m.step for m in history] == [1, 2]
    assert parent.data.params["privacy_secure_aggregation"] == "ckks"
    # the sentinel scan of the MLflow server's whole state (database and artifacts): no byte
    # string of the sites' theta_k that did not opt in, nor in the centre's storage
    from site_tasks.site.train import state_path
    from tests.site_tasks.test_private_round import theta_bytes

    run_config = replace(config, run=run_name(run.run_id))
    needles = [
        b
        for site in ("site-02", "site-03")
        for t in (1, 2)
        for b in theta_bytes(run_config, site, t)
    ]
    assert needles and state_path(run_config, "site-02", 2).is_file()
    base = Path(str(tmp_path_factory.getbasetemp()))
    tracked = [p.read_bytes() for d in base.glob("mlflow*") for p in d.rglob("*") if p.is_file()]
    stored = [store.get(k) or b"" for k in store.list(f"{config.name}/") if "/released/" not in k]
    assert tracked and stored
    for needle in needles:
        assert not any(needle in blob for blob in tracked), "a site's theta_k reached MLflow"
        assert not any(needle in blob for blob in stored), "a site's theta_k reached storage"

    # the second run (warm-started) has one round of budget left: it runs it, then registers
    second = load_dags(folder, monkeypatch).__dict__["fedmap_dag-private"].test()
    assert str(second.state) == "success", _states(second)
    later = Keys(config.name, run_name(second.run_id))
    assert store.get(later.prior(2)[1]) is not None and store.get(later.prior(3)[1]) is None
    last = json.loads(store.get(later.summary(1)) or b"")["privacy"]["epsilon"]
    assert last == pytest.approx(4.0113, abs=1e-3) and last <= 4.3
    assert set(client.get_registered_model("fedmap-dag-private-prior").aliases.values()) >= {"2"}
