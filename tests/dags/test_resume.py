"""Resume: a run whose aggregate failed at round r goes on when that task is cleared, from the
updates and priors already in storage; no earlier round is retrained and no object is rewritten
or duplicated."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

LoadDags = Callable[[Path, pytest.MonkeyPatch], ModuleType]  # the fixture in conftest.py
DAG_ID = "fedmap_synthetic-label-skew"
SITES = ("site-01", "site-02", "site-03")


def federation_folder(make_federation: Callable[..., Path], **overrides: Any) -> Path:
    """A federations/ folder holding the (all tier-1) federation written by make_federation."""
    path = make_federation(**overrides)
    body = yaml.safe_load(path.read_text())
    for spec in body["sites"].values():
        spec["data"] = f"../{spec['data']}"
        spec["tier"] = 1
    body["state_dir"] = f"../{body['state_dir']}"
    folder = path.parent / "federations"
    folder.mkdir(exist_ok=True)
    (folder / f"{body['name']}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return folder


def _name(ti: Any) -> str:
    """``task``, or ``task[site]`` for a mapped instance that ran (its rendered name)."""
    if ti.map_index < 0:
        return str(ti.task_id)
    return f"{ti.task_id}[{ti.rendered_map_index}]"


def _states(run: Any) -> dict[str, str]:
    return {_name(ti): str(ti.state) for ti in run.get_task_instances()}


def clear_failed_and_resume(dag: Any, run_id: str) -> Any:
    """Clear every failed and upstream-failed task instance of run_id, then run the DagRun to the
    end. ``dag.test()`` cannot resume: it clears every task instance of its logical date first.
    This is what the UI's "Clear, only failed" does (those task instances only, run back to
    running), followed by the same minimal scheduling loop as ``dag.test()`` without its clear.
    """
    import time

    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    assert settings.Session is not None
    session = settings.Session()
    tis = list(
        session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.state.in_(
                    [TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED]
                ),
            )
        )
    )
    clear_task_instances(tis, session, dag_run_state=DagRunState.RUNNING)
    session.commit()
    dr = session.scalars(
        select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id)
    ).one()
    dr.dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    idle = 0
    while dr.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        scheduled = [
            ti
            for ti in dr.get_task_instances(session=session)
            if ti.state == TaskInstanceState.SCHEDULED
        ]
        # a pass may only settle states (a skip cascading downstream) and schedule nothing
        idle = 0 if scheduled else idle + 1
        assert idle < 20, f"resumed run is stuck: {_states(dr)}"
        if not scheduled:
            time.sleep(0.2)
        for ti in scheduled:
            _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
    return dr


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root (one per object of the S3 server): relative path -> (sha256, mtime)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_failed_aggregate_resumes_from_stored_state_without_retraining_or_duplicates(
    airflow_db: None,
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    s3_server: Any,
    load_dags: LoadDags,
) -> None:
    from site_tasks.centre import server
    from site_tasks.runs import configure
    from site_tasks.site import train as training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = federation_folder(
        make_federation, n_sites=3, n_train=120, n_val=40, rounds=3, min_sites=2
    )
    calls: Counter[tuple[str, int]] = Counter()
    real_train, real_aggregate = training.train, server.aggregate

    def counted_train(
        config: Any, site: str, round_: int, store: Any, device: str | None = None
    ) -> Any:
        calls[(site, round_)] += 1
        return real_train(config, site, round_, store, device)

    def failing_once(config: Any, store: Any, round_: int) -> Any:
        calls[("aggregate", round_)] += 1
        if round_ == 2 and calls[("aggregate", 2)] == 1:
            raise RuntimeError("the coordinating centre lost its node during round 2")
        return real_aggregate(config, store, round_)

    monkeypatch.setattr(training, "train", counted_train)
    monkeypatch.setattr(server, "aggregate", failing_once)
    dag = load_dags(folder, monkeypatch).__dict__[DAG_ID]

    # --- the first attempt stops at round 2's aggregate ---------------------------------------
    run = dag.test()
    states = _states(run)
    assert str(run.state) == "failed", states
    assert states["aggregate"] == "failed"
    for site in SITES:
        # each site trained rounds 1 and 2, then stopped: no prior of round 3 would come
        assert states[f"train[{site}]"] == "failed", states
    finalise = [str(ti.state) for ti in run.get_task_instances() if ti.task_id == "finalise"]
    assert finalise == ["upstream_failed"] * len(SITES), states  # never ran: named by index
    # register is all_done, so it runs; it finds no final prior and fails with RoundNotReady
    assert states["register"] == "failed"
    assert states["summarise"] == "failed"  # it wrote the note, then failed with the run
    assert calls == Counter(
        {**{(s, t): 1 for s in SITES for t in (1, 2)}, ("aggregate", 1): 1, ("aggregate", 2): 1}
    )
    config, store = configure(folder / "synthetic-label-skew.yaml", run.run_id)
    from site_tasks.storage import Keys

    keys = Keys.of(config)
    prefix = f"{config.name}/{config.run}/"
    run_root = s3_server.root / config.storage.bucket / config.name / config.run
    before = snapshot(run_root)
    assert store.get(keys.summary(2)) is None and store.get(keys.prior(3)[1]) is None
    assert set(before) == {
        *(f"validation/{s}.json" for s in SITES),
        "round-1/prior.safetensors",
        "round-1/prior.json",
        "round-1/summary.json",
        "round-2/prior.safetensors",
        "round-2/prior.json",
        *(
            f"round-{t}/updates/{s}.{e}"
            for t in (1, 2)
            for s in SITES
            for e in ("safetensors", "json")
        ),
    }
    tries = {_name(ti): ti.try_number for ti in run.get_task_instances()}

    # --- clear the failed tasks: the run goes on from what storage and the sites hold ---------
    resumed = clear_failed_and_resume(dag, run.run_id)
    states = _states(resumed)
    assert str(resumed.state) == "success", states
    after_tries = {_name(ti): ti.try_number for ti in resumed.get_task_instances()}
    assert after_tries["start"] == tries["start"]  # succeeded: never cleared, never re-run
    for site in SITES:
        assert after_tries[f"validate[{site}]"] == tries[f"validate[{site}]"]
        assert states[f"train[{site}]"] == "success"
        assert states[f"finalise[{site}]"] == "success"
    assert states["aggregate"] == "success"
    assert states["register"] == "skipped"
    # cleared with the failed tasks, summarise wrote the note again: the resumed run's
    summarise = next(ti for ti in resumed.get_task_instances() if ti.task_id == "summarise")
    note = summarise.xcom_pull(task_ids="summarise", key="note")
    assert "- rounds 1-3: 3 of 3 sites; quorum met" in note, note
    assert after_tries["summarise"] == tries["summarise"] + 1
    # every (site, round) trained exactly once over both attempts; round 2 aggregated twice
    # (the failed call, then after the clear), rounds 1 and 3 once
    assert calls == Counter(
        {
            **{(s, t): 1 for s in SITES for t in (1, 2, 3)},
            ("aggregate", 1): 1,
            ("aggregate", 2): 2,
            ("aggregate", 3): 1,
        }
    )
    # --- storage: nothing rewritten, only the resumed rounds' objects added, no duplicates ---
    after = snapshot(run_root)
    assert {k: after[k] for k in before} == before  # same bytes, same mtime: never rewritten
    assert set(after) - set(before) == {
        "round-2/summary.json",
        "round-3/prior.safetensors",
        "round-3/prior.json",
        *(f"round-3/updates/{s}.{e}" for s in SITES for e in ("safetensors", "json")),
        "round-3/summary.json",
        "round-4/prior.safetensors",
        "round-4/prior.json",
        *(f"evaluation/{s}.json" for s in SITES),
    }
    # the whole bucket, as the S3 API lists it and as files on disk: the run's objects, once each
    # (no temporary or part files; rclone's server does not implement ListMultipartUploads)
    listed = store.list("")
    assert len(listed) == len(set(listed)) == len(after)
    assert set(listed) == {prefix + k for k in after}
    assert set(snapshot(s3_server.root / config.storage.bucket)) == set(listed)

    # the prior of round 3 is the aggregate of round 2's stored updates under round 2's prior
    from fedmap.messages import encode_params
    from fedmap.server import aggregate_round
    from site_tasks.centre.server import collect
    from site_tasks.site.train import fetch_prior

    prior_2, _ = fetch_prior(config, store, 2)
    expected, summary = aggregate_round(
        config.method, 2, collect(config, store, 2), prior_2.tensors, list(SITES)
    )
    assert summary.contributed == SITES
    assert store.get(keys.prior(3)[0]) == encode_params(expected)
