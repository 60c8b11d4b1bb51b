"""The federation DAG: it parses fast, has the documented shape, and a whole run against the
real local S3 server trains, aggregates, excludes a bad site and enforces the quorum."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "fedmap_federation.py"
LoadDags = Callable[[Path, pytest.MonkeyPatch], ModuleType]  # the fixture in conftest.py


def federation_folder(
    make_federation: Callable[..., Path], tiers: dict[str, int] | None = None, **overrides: Any
) -> Path:
    """A federations/ folder holding the federation written by make_federation."""
    path = make_federation(**overrides)
    body = yaml.safe_load(path.read_text())
    for site, spec in body["sites"].items():
        spec["data"] = f"../{spec['data']}"
        spec["tier"] = (tiers or {}).get(site, 1)
    body["state_dir"] = f"../{body['state_dir']}"
    folder = path.parent / "federations"
    folder.mkdir(exist_ok=True)
    (folder / f"{body['name']}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return folder


DAG_ID = "fedmap_synthetic-label-skew"


def sites_of(task: Any) -> list[str]:
    """The sites a mapped site task is expanded over, one instance each."""
    return list(task.op_kwargs_expand_input.value["site"])


def test_dag_file_parses_in_under_a_second_without_torch(
    make_federation: Callable[..., Path],
) -> None:
    folder = federation_folder(make_federation, n_sites=3, rounds=2, min_sites=2)
    probe = (
        "import sys, time, runpy; import airflow.sdk, pendulum, yaml; "
        f"t = time.perf_counter(); ns = runpy.run_path({str(DAG_FILE)!r}); "
        "print(time.perf_counter() - t, 'torch' in sys.modules, sorted(k for k in ns if k.startswith('fedmap_')))"
    )
    env = {**os.environ, "FEDMAP_FEDERATIONS_DIR": str(folder)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    seconds, torch_loaded, dags = out.stdout.strip().splitlines()[-1].split(" ", 2)
    assert float(seconds) < 1.0
    assert torch_loaded == "False"
    assert dags == f"[{DAG_ID!r}]"


def test_dagbag_imports_every_federation_and_shows_a_bad_file_as_its_own_dag(
    make_federation: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    folder = federation_folder(make_federation, {"site-03": 3}, n_sites=3, rounds=2)
    body = yaml.safe_load((folder / "synthetic-label-skew.yaml").read_text())
    body["name"] = "second"
    (folder / "second.yaml").write_text(yaml.safe_dump(body))
    (folder / "broken.yaml").write_text(yaml.safe_dump({**body, "name": "broken", "rnds": 2}))
    monkeypatch.setenv("FEDMAP_FEDERATIONS_DIR", str(folder))
    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        DAG_ID,
        f"{DAG_ID}_inference",
        "fedmap_second",
        "fedmap_second_inference",
        "fedmap_broken",
    }
    invalid = bag.dags.get("fedmap_broken")  # get_dag would query the metadata DB
    assert invalid is not None and "config-error" in invalid.tags
    assert "unknown key(s) rnds" in (invalid.doc_md or "")


def test_dag_has_the_documented_shape(
    make_federation: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, load_dags: LoadDags
) -> None:
    folder = federation_folder(make_federation, {"site-03": 2}, n_sites=3, rounds=2, min_sites=2)
    file = folder / "synthetic-label-skew.yaml"
    body = yaml.safe_load(file.read_text())
    for name, spec in body["sites"].items():
        spec["queue"] = f"q-{name}"
    file.write_text(yaml.safe_dump(body, sort_keys=False))
    dag = load_dags(folder, monkeypatch).__dict__[DAG_ID]
    assert dag.dag_id == DAG_ID
    assert dag.catchup is False and dag.max_active_runs == 1
    assert "fedmap" in dag.tags and dag.doc_md
    assert set(dag.task_ids) == {
        "start",
        "validate",
        "validated",
        "train",
        "aggregate",
        "finalise",
        "register",
        "release",
        "summarise",
    }
    train = dag.get_task("train")
    assert train.retries == 1 and train.retry_exponential_backoff
    assert train.execution_timeout is not None
    assert train.partial_kwargs["map_index_template"] == "{{ task.op_kwargs['site'] }}"
    # tier 2 validates and fine-tunes but never trains; each instance carries its site's queue
    assert sites_of(train) == ["site-01", "site-02"]
    assert train.partial_kwargs["op_kwargs"]["site_queues"] == ["q-site-01", "q-site-02"]
    assert sites_of(dag.get_task("validate")) == ["site-01", "site-02", "site-03"]
    aggregate = dag.get_task("aggregate")
    assert aggregate.trigger_rule == "all_done" and aggregate.mode == "reschedule"
    # the validations meet in one join, so the graph draws one edge on to the rounds
    join = dag.get_task("validated")
    assert join.trigger_rule == "all_done"
    assert {t.task_id for t in join.upstream_list} == {"validate"}
    assert {t.task_id for t in join.downstream_list} == {"train", "aggregate"}
    assert {t.task_id for t in aggregate.upstream_list} == {"validated"}
    assert dag.get_task("train").trigger_rule == "all_done"
    assert {t.task_id for t in dag.get_task("finalise").upstream_list} == {"aggregate"}
    # the note is written whatever the run ended in; release stays a leaf, so a failed run fails
    summarise = dag.get_task("summarise")
    assert summarise.trigger_rule == "all_done"
    assert {t.task_id for t in summarise.upstream_list} == {"register"}
    assert {t.task_id for t in dag.leaves} == {"release", "summarise"}


@pytest.mark.parametrize(("sites", "rounds"), [(10, 3), (10, 50), (400, 50)])
def test_the_dag_size_grows_with_sites_never_with_rounds(
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    load_dags: LoadDags,
    sites: int,
    rounds: int,
) -> None:
    """Nine tasks whatever the federation; one run holds 3 x sites + 6 task instances."""
    folder = federation_folder(make_federation, n_sites=3, rounds=2, min_sites=2)
    body = yaml.safe_load((folder / "synthetic-label-skew.yaml").read_text())
    first = body["sites"]["site-01"]
    body["sites"] = {f"h{i:03d}": {**first, "queue": f"q{i:03d}"} for i in range(sites)}
    body["algorithm"]["rounds"] = rounds
    (folder / "synthetic-label-skew.yaml").write_text(yaml.safe_dump(body))
    dag = load_dags(folder, monkeypatch).__dict__[DAG_ID]
    assert len(dag.tasks) == 9
    mapped = {t: len(sites_of(dag.get_task(t))) for t in ("validate", "train", "finalise")}
    assert mapped == {"validate": sites, "train": sites, "finalise": sites}
    unmapped = set(dag.task_ids) - set(mapped)  # one instance each, whatever the rounds
    assert unmapped == {"start", "validated", "aggregate", "register", "release", "summarise"}


def _states(run: Any) -> dict[str, str]:
    """Each task instance's state: ``task`` or, mapped, ``task[site]`` (its rendered name)."""
    return {
        ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index}]": str(ti.state)
        for ti in run.get_task_instances()
    }


def test_a_run_excludes_a_bad_site_aggregates_the_others_and_finalises(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    load_dags: LoadDags,
) -> None:
    folder = federation_folder(
        make_federation, {"site-04": 2}, n_sites=4, n_train=120, n_val=40, rounds=2, min_sites=2
    )
    bad = folder.parent / "hospital-data" / "site-03" / "train.csv"
    lines = bad.read_text().splitlines()
    lines[4] = ",".join(["nan", *lines[4].split(",")[1:]])
    bad.write_text("\n".join(lines) + "\n")
    dag = load_dags(folder, monkeypatch).__dict__[DAG_ID]
    assert "site-04" not in sites_of(dag.get_task("train"))  # tier 2 never trains
    run = dag.test()
    states = _states(run)
    assert str(run.state) == "success", states
    assert states["validate[site-03]"] == "skipped"
    assert states["train[site-03]"] == "skipped"
    assert states["aggregate"] == "success"
    assert states["finalise[site-01]"] == "success"
    assert states["finalise[site-03]"] == "skipped"
    assert states["finalise[site-04]"] == "success"
    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.storage import Keys, S3Store

    config = load_federation(folder / "synthetic-label-skew.yaml")
    store = S3Store(config.storage)
    keys = Keys(config.name, run_name(run.run_id))
    summary = json.loads(store.get(keys.summary(2)) or b"{}")
    assert summary["contributed"] == ["site-01", "site-02"]
    assert summary["missing"] == ["site-03"]
    # which worker ran each site's training: without $FEDMAP_WORKER, the site (never the host)
    assert summary["workers"] == {"site-01": "site-01", "site-02": "site-02"}
    assert store.get(keys.prior(3)[1]) is not None
    tier2 = json.loads(store.get(keys.evaluation("site-04")) or b"{}")
    # 120 rows and 2 rounds: the scores are there and valid; their size is the demo's business
    assert tier2["tier"] == 2 and 0.0 <= tier2["personalised"]["accuracy"] <= 1.0
    from fedmap.metrics import METRICS  # the list itself is pinned in tests/fedmap/test_metrics.py

    for model in ("personalised", "prior", "local"):
        assert set(tier2[model]) == set(METRICS["binary"])
    assert store.get(keys.evaluation("site-01")) is not None
    assert store.get(keys.evaluation("site-03")) is None
    assert not any("updates/site-04" in k for k in store.list(""))  # nothing of tier 2 is sent


def test_below_quorum_the_round_fails_naming_the_missing_sites(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    load_dags: LoadDags,
) -> None:
    folder = federation_folder(
        make_federation, n_sites=2, n_train=120, n_val=40, rounds=1, min_sites=2
    )
    bad = folder.parent / "hospital-data" / "site-02" / "val.csv"
    bad.unlink()
    dag = load_dags(folder, monkeypatch).__dict__[DAG_ID]
    run = dag.test()
    states = _states(run)
    assert str(run.state) == "failed", states
    assert states["aggregate"] == "failed"
    assert states["summarise"] == "failed"  # after its note: a clear of the failed tasks reruns it
    out = capfd.readouterr().out
    assert "quorum is 2; missing: site-02" in out
    # the note: round 1's decision and why nothing was registered
    assert "- round 1: 1 of 2 sites, missing site-02; **quorum 2 not met**" in out
    assert "- gate: not registered (register failed)" in out
    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.storage import Keys, S3Store

    config = load_federation(folder / "synthetic-label-skew.yaml")
    store = S3Store(config.storage)
    keys = Keys(config.name, run_name(run.run_id))
    assert json.loads(store.get(keys.summary(1)) or b"{}")["contributed"] == ["site-01"]
    assert store.get(keys.prior(2)[1]) is None  # no prior is written below the quorum


def test_a_site_whose_training_raises_is_tolerated_by_the_quorum(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    load_dags: LoadDags,
) -> None:
    from site_tasks.runs import run_name
    from site_tasks.site import train as training

    folder = federation_folder(
        make_federation, n_sites=3, n_train=120, n_val=40, rounds=1, min_sites=2
    )
    real = training.train

    def flaky(config: Any, site: str, round_: int, store: Any, device: str | None = None) -> Any:
        if site == "site-02":
            raise RuntimeError("the site's GPU fell over")
        return real(config, site, round_, store, device)

    monkeypatch.setattr(training, "train", flaky)
    dag = load_dags(folder, monkeypatch).__dict__[DAG_ID]
    run = dag.test()
    states = _states(run)
    assert states["train[site-02]"] == "failed"
    assert states["aggregate"] == "success"
    assert str(run.state) == "success", states
    assert states["finalise[site-01]"] == "success"
    from site_tasks.federation import load_federation
    from site_tasks.storage import Keys, S3Store

    config = load_federation(folder / "synthetic-label-skew.yaml")
    summary = json.loads(
        S3Store(config.storage).get(Keys(config.name, run_name(run.run_id)).summary(1)) or b"{}"
    )
    assert summary["contributed"] == ["site-01", "site-03"]
    assert summary["missing"] == ["site-02"]


def with_connections(
    folder: Path, name: str, monkeypatch: pytest.MonkeyPatch, s3_server: Any, mlflow_server: str
) -> Path:
    """Rename the federation in folder to ``name`` and give it storage and MLflow from Airflow
    connections (set in the environment, as a deployment's secrets backend would); enrol it."""
    from site_tasks import trust
    from site_tasks.federation import load_federation

    file = folder / "synthetic-label-skew.yaml"
    body = yaml.safe_load(file.read_text())
    body["name"] = name
    body["storage"] = {"bucket": body["storage"]["bucket"], "connection": "fedmap_s3"}
    body["mlflow"] = {"connection": "fedmap_mlflow"}
    file.write_text(yaml.safe_dump(body, sort_keys=False))
    trust.enrol_all(load_federation(file))  # the renamed one
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s3_conn = {
        "conn_type": "aws",
        "login": s3_server.access_key,
        "password": s3_server.secret_key,
        "extra": {"endpoint_url": s3_server.url},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEDMAP_S3", json.dumps(s3_conn))
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEDMAP_MLFLOW", json.dumps({"conn_type": "http", "host": mlflow_server})
    )
    return file


def _tier3_files(folder: Path) -> tuple[int, int]:
    """Give a site folder a tier-3 layout: reference.csv and score.csv, features only."""

    from fedmap.data import read_site, write_features

    split = read_site(folder)
    write_features(folder / "reference.csv", split.x_train)
    write_features(folder / "score.csv", split.x_val)
    return len(split.x_train), len(split.x_val)


def test_a_run_registers_its_models_and_releases_the_champion_to_tier_3(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    mlflow_server: str,
    s3_server: Any,
    load_dags: LoadDags,
) -> None:
    """3 tier-1 sites, 2 rounds, settings from Airflow connections: registered versions, alias,
    nested runs with per-round metrics, the storage layout, the Asset, the inference DAG."""
    import mlflow

    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.storage import Keys, S3Store

    folder = federation_folder(
        make_federation, {"site-04": 3}, n_sites=4, n_train=120, n_val=40, rounds=2, min_sites=2
    )
    with_connections(folder, "dag-registry", monkeypatch, s3_server, mlflow_server)
    _, n_score = _tier3_files(folder.parent / "hospital-data" / "site-04")
    dags = load_dags(folder, monkeypatch).__dict__
    dag, inference = dags["fedmap_dag-registry"], dags["fedmap_dag-registry_inference"]
    assert "site-04" not in sites_of(dag.get_task("validate"))
    assert inference.task_ids == ["score", "summarise"]
    assert sites_of(inference.get_task("score")) == ["site-04"]
    assert "fedmap-dag-registry-prior-champion" in str(inference.timetable.asset_condition)
    assert [o.name for o in dag.get_task("release").outlets] == [
        "fedmap-dag-registry-prior-champion"
    ]
    run = dag.test()
    states = _states(run)
    assert str(run.state) == "success", states
    assert states["register"] == "success" and states["release"] == "success"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the connection was scoped to the tasks
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    assert client.get_registered_model("fedmap-dag-registry-prior").aliases == {"champion": "1"}
    site = client.get_model_version("fedmap-dag-registry-site-02", "1")
    assert site.tags["dag_run_id"] == run.run_id
    assert len(site.tags["code_version"]) >= 7
    assert site.tags["data_version"].endswith(".dir")  # the DVC hash of the site's folder
    assert set(json.loads(site.tags["data_files_sha256"])) == {"train.csv", "val.csv"}
    assert json.loads(site.tags["validation"])["success"] is True
    for who in ("site-01", "site-02", "site-03", "prior"):
        assert client.get_registered_model(f"fedmap-dag-registry-{who}").latest_versions
    experiment = client.get_experiment_by_name("fedmap-dag-registry")
    assert experiment is not None
    parent = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.dag_run_id = '{run.run_id}' and attributes.run_name = '{run_name(run.run_id)}'",
    )[0]
    assert parent.data.params["rounds"] == "2" and parent.data.tags["prior_alias"] == "champion"
    # the centre's hash-chained audit log of the run, verified and attached to the parent run
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "audit")] == [
        "audit/audit.jsonl"
    ]
    assert int(parent.data.tags["audit_entries"]) > 0 and len(parent.data.tags["audit_head"]) == 64
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(c.data.tags["site"] for c in children) == ["site-01", "site-02", "site-03"]
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "weight")] == [1, 2]

    # the storage layout of the run: prior per round, one update per site per round, summaries
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    config = load_federation(folder / "synthetic-label-skew.yaml")
    store = S3Store(config.storage)
    prefix = f"dag-registry/{run_name(run.run_id)}/"
    layout = {k.removeprefix(prefix) for k in store.list(prefix)}
    assert layout == {
        *(f"round-{t}/prior.{ext}" for t in (1, 2, 3) for ext in ("safetensors", "json")),
        *(f"round-{t}/summary.json" for t in (1, 2)),
        *(
            f"round-{t}/updates/site-0{k}.{ext}"
            for t in (1, 2)
            for k in (1, 2, 3)
            for ext in ("safetensors", "json")
        ),
        *(f"validation/site-0{k}.json" for k in (1, 2, 3)),
        *(f"evaluation/site-0{k}.json" for k in (1, 2, 3)),
    }

    # tier 3: the inference DAG scores score.csv with the champion and reports counts only
    scored = inference.test()
    assert str(scored.state) == "success", _states(scored)
    out = config.state_dir / "predictions" / "dag-registry" / "site-04"
    lines = (out / "predictions_fedmap-dag-registry-prior_v1.csv").read_text().splitlines()
    assert lines[0] == "row,probability,prediction,model,version"
    assert len(lines) == 1 + n_score
    assert all(line.endswith(",fedmap-dag-registry-prior,1") for line in lines[1:])
    counts = json.loads(
        store.get(Keys(config.name, run_name(scored.run_id)).inference("site-04")) or b""
    )
    assert counts["rows"] == counts["n_scored"] == n_score and counts["version"] == "1"
    assert counts["imputed"] == 0  # this recipe does not impute
    assert set(counts) == {
        "site",
        "model",
        "version",
        "rows",
        "n_scored",
        "imputed",
        "predicted_positive",
        "reference_rows",
        "predictions_file",
    }

    # the next run warm-starts from the champion prior
    second = load_dags(folder, monkeypatch).__dict__["fedmap_dag-registry"].test()
    assert str(second.state) == "success", _states(second)
    from fedmap.messages import Manifest

    champion = client.get_model_version("fedmap-dag-registry-prior", "1").tags
    start = Manifest.from_json(
        store.get(Keys(config.name, run_name(second.run_id)).prior(1)[1]) or b""
    )
    assert start.extra["warm_start_from"] == "fedmap-dag-registry-prior@champion (version 1)"
    assert store.get(Keys(config.name, run_name(second.run_id)).prior(1)[0]) == store.get(
        champion["prior_key"]
    )
    assert set(client.get_registered_model("fedmap-dag-registry-prior").aliases.values()) >= {"2"}


def test_without_mlflow_the_register_task_is_skipped(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    load_dags: LoadDags,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    caplog.set_level(logging.INFO, logger="site_tasks")  # as a worker's task log has it
    folder = federation_folder(
        make_federation, n_sites=2, n_train=100, n_val=40, rounds=1, min_sites=1
    )
    run = load_dags(folder, monkeypatch).__dict__[DAG_ID].test()
    states = _states(run)
    assert states["register"] == "skipped"
    assert str(run.state) == "success", states
    # the equity summary is still in the register task's log (Airflow prints it to stdout)
    logged = capfd.readouterr().out + caplog.text
    assert "equity of the run (accuracy)" in logged
    assert "Worst-served site (lowest local accuracy)" in logged
    assert "- gate: not registered (no MLflow server)" in logged  # the run's note says so
    assert "- round 1: 2 of 2 sites; quorum met" in logged
