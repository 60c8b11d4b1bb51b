"""What a data engineer reads in the Airflow UI after a run of the demo's kind (``airflow dags
test`` through ``site_tasks.local.airflow_run.dags_test``), checked through the REST API the UI
itself calls, served by a real ``airflow api-server``: a train task's log holds its own site's
lines and no other's, ``register``'s log the equity table, the DAG run's note summarises the run,
and the champion's asset event names its model and version."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.dags.test_federation_dag import federation_folder, with_connections

NAME = "dag-pages"
DAG_ID = f"fedmap_{NAME}"


class Api:
    """GET and PATCH against the API server with a token from ``/auth/token`` (every user is
    admin on the local stack, as under ``make up``)."""

    def __init__(self, base: str) -> None:
        self.base = base
        with urllib.request.urlopen(f"{base}/auth/token", timeout=10) as response:
            self.token = json.loads(response.read())["access_token"]

    def get(self, path: str, **query: Any) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return json.loads(r.read())


def _events(api: Api, run: str, task: str, try_number: int, map_index: int = -1) -> list[str]:
    """The events of a task try's log, as the UI's log pane shows them."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task}/logs/{try_number}"
    content = api.get(path, map_index=map_index)["content"]
    return [str(line.get("event", "")) for line in content]


@pytest.mark.slow
def test_a_dags_test_run_reads_in_the_api_server(
    make_federation: Callable[..., Path],
    s3_server: Any,
    mlflow_server: str,
    airflow_api: Callable[[Mapping[str, str]], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from site_tasks.centre.steps import publish_note
    from site_tasks.local.airflow_run import airflow, dags_test
    from site_tasks.local.stack import Stack, free_port

    folder = federation_folder(
        make_federation, n_sites=2, n_train=120, n_val=40, rounds=1, min_sites=2
    )
    with_connections(folder, NAME, monkeypatch, s3_server, mlflow_server)
    monkeypatch.setenv("FEDMAP_FEDERATIONS_DIR", str(folder))
    s3_port, mlflow_port = (int(url.rsplit(":", 1)[1]) for url in (s3_server.url, mlflow_server))
    stack = Stack(tmp_path / "state", s3_port, mlflow_port, free_port())
    keys = stack.state / "s3" / "credentials.json"  # the stack's S3 key: the test server's
    keys.parent.mkdir(parents=True)
    keys.write_text(json.dumps({"access": s3_server.access_key, "secret": s3_server.secret_key}))
    airflow(stack, ["db", "migrate"])
    names = {"train": ["site-01", "site-02"], "validate": ["site-01", "site-02"]}
    run_id, state = dags_test(stack, DAG_ID, tmp_path / "federation.log", names)
    assert state == "success"

    api = Api(airflow_api({**os.environ, **stack.environment()}))
    run = urllib.parse.quote(run_id, safe="")
    # each train task's log pane holds its own site's lines (device, log omega, its update's key)
    for index, site in enumerate(("site-01", "site-02")):
        ti = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/train/{index}")
        events = _events(api, run, "train", ti["try_number"], index)
        own = [e for e in events if e.startswith(f"{site}: round 1: ")]
        assert any("training on cpu" in e for e in own), events
        assert any("log omega" in e and e.endswith(f"round-1/updates/{site}.json") for e in own)
        other = "site-02" if site == "site-01" else "site-01"
        assert not any(e.startswith(f"{other}:") for e in events)  # the stream split per task
    assert any("equity of the run (accuracy)" in e for e in _events(api, run, "register", 1))

    # the run's note: the round and its quorum decision, the gate, the equity
    note = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run}")["note"]
    lines = note.splitlines()
    assert lines[0] == f"**fedmap-{NAME}**: 1 round, quorum 2 of 2 tier-1 sites"
    assert lines[1] == "- round 1: 2 of 2 sites; quorum met"
    assert lines[2] == f"- gate: `fedmap-{NAME}-prior` v1 -> **champion** (no champion yet)"
    assert lines[3].startswith("- equity (accuracy, 2 sites): mean gain ")

    # the champion's asset event says which model version it announces, and from which run
    events = api.get("/api/v2/assets/events", source_dag_id=DAG_ID)["asset_events"]
    assert [e["extra"] for e in events] == [
        {
            "model": f"fedmap-{NAME}-prior",
            "version": "1",
            "uri": f"models:/fedmap-{NAME}-prior/1",
            "dag_run_id": run_id,
        }
    ]

    # under a scheduler, summarise sets the note itself, through this API
    publish_note(api.base, DAG_ID, run_id, "set through the REST API")
    assert api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run}")["note"] == "set through the REST API"
