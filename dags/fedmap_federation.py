"""One Airflow DAG per federation file in ``federations/``: ``fedmap_<name>``. One DAG run is one
federation run, and its size grows with the sites, never with the rounds.

The graph of a run (each site task is mapped over the sites and named by site in the UI):

1. ``start``: the bucket, and the prior of round 1 (the champion, else Algorithm 1).
2. ``validate [site]``: every site with data checks it against the federation's contract, once
   per run, and records each file's SHA-256. A site that fails is *skipped* for this run (the
   reason is in its log) and the others go on. Later steps only check those digests.
   ``validated`` is their join (it runs whatever they ended in), so the graph draws one edge
   from the validations to the rounds.
3. ``train [site]`` (tier 1), one task per site for every round: a sensor in ``reschedule`` mode
   whose every poke trains the site's next round as soon as its prior is committed (the local
   MAP step under the round's prior), then gives its worker slot back. It runs on the site's
   queue, with retries and exponential back-off; it stops with an error if the centre's
   ``aggregate`` failed.
4. ``aggregate``, one task for every round: a sensor at the centre whose every poke aggregates the
   current round once each site still in the run has committed its update, checks each update,
   enforces the quorum (``min_sites``) and writes the next prior. A site is out of the run when
   its validation failed or its train task ended failed. Below the quorum it fails naming the
   missing sites. Each round's decision is an XCom (``round_<t>``) and a line in its log; the
   round summary (``round-<t>/summary.json``) names the accepted, rejected and missing sites.
5. ``finalise [site]``: a tier-1 site scores its own model, the final prior's mean and a
   local-only model on its validation split; a tier-2 site fine-tunes the final prior. Only
   metrics leave.
6. ``register``: MLflow parent and nested runs, registered models, the equity summary and the
   champion gate (skipped without an MLflow server).
7. ``release``: when the new prior became ``champion``, it updates the Asset
   ``fedmap-<name>-prior-champion``, which schedules ``fedmap_<name>_inference``. The asset
   event's extra names the champion: ``model``, ``version``, ``uri`` and ``dag_run_id``.
8. ``summarise``: the run's note (sites per round, quorum decisions, the gate, equity), whatever
   the run ended in; it is set on the DAG run through the API server of the connection
   ``fedmap_airflow`` when there is one (under ``airflow dags test`` the demo's runner sets it).
   When ``register`` failed it fails too, after the note, so that clearing the run's failed
   tasks writes the note again.

Where to look: each task's log (a site's device, log omega and where its update went are in its
``train`` log; the equity table in ``register``'s), this run's note, and in MLflow the parent
run's ``rounds_sites.png`` (w_k, the validation score and failures per round and site) and
``site_gain.png``.

To resume a run whose ``aggregate`` failed, clear the run's failed tasks (the UI's "Clear, only
failed"): every step reads its progress from storage and the sites' disks, so nothing is retrained.

Each mapped site task carries ``site_queues``, the queue of the site at each map index; the
cluster policy (``infra/centre/airflow_local_settings.py``) routes every instance, retries
included, to its site's queue. Storage and MLflow settings the file leaves out come from the
Airflow connections it names, put into each task's environment. Task bodies are a few lines over
``site_tasks.site.steps`` and ``site_tasks.centre.steps``; torch loads inside tasks only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Asset, PokeReturnValue, dag, get_current_context, task
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowNotFoundException,
    AirflowRescheduleException,
    AirflowSkipException,
)

from fedmap.schema import ConfigError, Federation, read_federation

FEDERATIONS = Path(
    os.environ.get("FEDMAP_FEDERATIONS_DIR", Path(__file__).resolve().parents[1] / "federations")
)
RETRIES = int(os.environ.get("FEDMAP_TRAIN_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("FEDMAP_RETRY_DELAY_S", "30")))
TRAIN_TIMEOUT = timedelta(minutes=float(os.environ.get("FEDMAP_TRAIN_TIMEOUT_MIN", "60")))
AGGREGATE_RETRIES = int(os.environ.get("FEDMAP_AGGREGATE_RETRIES", "2"))
"""Retries of the centre's aggregate after an error that is not a decision (a lost node, the
executor's late report of a poke, apache/airflow#71172); below the quorum it fails at once."""
GATE_TOLERANCE = float(os.environ.get("FEDMAP_GATE_TOLERANCE", "0.01"))
AIRFLOW_API = os.environ.get("FEDMAP_AIRFLOW_API_CONNECTION", "fedmap_airflow")
"""The connection to Airflow's own API server (host: its URL; login and password, unless every
user is admin), through which ``summarise`` sets the run's note."""
POKE_S = float(os.environ.get("FEDMAP_POKE_INTERVAL_S", "0"))
"""Seconds between two pokes of a site's waiting train task: 0 suits ``dags test`` and the
LocalExecutor; on edge workers it must outlast a poke's wind-down (``make federation-up`` and
``infra/`` set 10 s), or the worker's late "success" of one poke lands on the next poke's job
and fails it (apache/airflow#71172, unfixed in 3.3.2)."""
AGGREGATE_POKE_S = float(os.environ.get("FEDMAP_AGGREGATE_POKE_S", "0"))
"""Seconds between two pokes of the centre's aggregate. The same race reached the centre's
LocalExecutor on a loaded machine (2 s failed at load 5; ``make federation-up`` sets 10 s)."""
WAIT_S = float(os.environ.get("FEDMAP_TRAIN_WAIT_S", "0"))
"""How long one poke of a train task keeps polling for the next prior before it gives its
worker slot back (0 in ``dags test``, which runs one task at a time)."""
BACKOFF_MAX_S = float(os.environ.get("FEDMAP_POKE_BACKOFF_MAX_S", "0"))
"""Above 0: a site's train task that has trained its round and waits for the next prior pokes
less often the longer it has waited (half its wait so far, at least the poke interval, at most
this), so the sites that have not trained yet get the worker slots. 0 (``dags test``): off."""
RUN_TIMEOUT = timedelta(hours=float(os.environ.get("FEDMAP_RUN_TIMEOUT_H", "72")))
"""How long the rounds of one run may take in all (a sensor's ``timeout``)."""
ENDED = frozenset({"failed", "upstream_failed", "skipped", "removed"})
SITE_NAME = "{{ task.op_kwargs['site'] }}"


def _run_id() -> str:
    return str(get_current_context()["run_id"])


def _url(conn: Any) -> str:
    """An HTTP connection's URL: its host when that is one, else schema://host:port."""
    host = str(conn.host or "")
    if "://" in host:
        return host
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'http'}://{host}{port}"


def _environment(fed: Federation, site: bool) -> dict[str, str]:
    """The federation's Airflow connections as the variables boto3 and MLflow read. A site's
    worker may lack the MLflow connection (tiers 1-2 never use it); the centre may not."""
    from airflow.sdk import Connection

    env: dict[str, str] = {}
    if fed.storage is not None and fed.storage.connection:
        s3 = Connection.get(fed.storage.connection)
        extra = s3.extra_dejson
        for name, value in (
            ("AWS_ACCESS_KEY_ID", s3.login),
            ("AWS_SECRET_ACCESS_KEY", s3.password),
            ("AWS_ENDPOINT_URL_S3", extra.get("endpoint_url") or s3.host),
        ):
            if value:
                env[name] = str(value)
    if fed.mlflow.connection:
        try:
            server = Connection.get(fed.mlflow.connection)
        except AirflowNotFoundException:
            if not site:
                raise
            return env
        env["MLFLOW_TRACKING_URI"] = _url(server)
    return env


@contextmanager
def settings(fed: Federation, site: bool = False) -> Iterator[None]:
    """Run a task body with the federation's connections in its environment, then restore it.
    ``site``: the task runs on a site's queue (validate, train, finalise, score)."""
    env = _environment(fed, site)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def at_site(fed: Federation, site: str) -> Iterator[None]:
    """Run a site's step with the federation's connections; a site excluded from the run (its
    data broke the contract) is skipped, with the reason in its log."""
    from site_tasks.runs import SiteExcluded

    try:
        with settings(fed, site=True):
            yield
    except SiteExcluded as exc:
        raise AirflowSkipException(f"{site} excluded from this run: {exc}") from exc


def _states(task_id: str) -> dict[str, str]:
    """This run's task states of task_id: ``{task_id: state}``, or ``{task_id_<i>: state}`` for
    each map index i of a mapped task."""
    context = get_current_context()
    ti = context["ti"]
    found = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
    return {k: str(v) for k, v in found.get(ti.run_id, {}).items()}


def _note(note: str, ended: list[str]) -> None:
    """Log the run's note, keep it as the XCom ``note`` and set it on the run through the API
    server of the connection AIRFLOW_API when one is defined and answers (under ``airflow dags
    test`` none does: the demo's runner sets it from the XCom). ``ended``: the tasks that did
    not succeed; then this task fails too, after the note, so that clearing a run's failed tasks
    writes its note again once the run goes on."""
    from airflow.sdk import Connection

    from site_tasks.centre import steps

    context = get_current_context()
    print(note)
    context["ti"].xcom_push(key="note", value=note)
    try:
        api = Connection.get(AIRFLOW_API)
        steps.publish_note(
            _url(api), context["dag"].dag_id, _run_id(), note, api.login, api.password
        )
    except AirflowNotFoundException:
        print(f"no connection {AIRFLOW_API}: the note is this task's XCom 'note'")
    except OSError as exc:
        print(f"the note was not set through {AIRFLOW_API} ({exc}); it is this task's XCom 'note'")
    if ended:
        raise AirflowFailException(f"the run did not finish ({', '.join(ended)}); see the note")


def build(fed: Federation) -> Any:
    path = str(fed.path)
    members = fed.tier(1, 2)
    contributors = fed.tier(1)

    @dag(
        dag_id=f"fedmap_{fed.name}",
        schedule=fed.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["fedmap", f"federation:{fed.name}"],
        doc_md=__doc__,
        default_args={"retries": 0},
    )
    def federation() -> None:
        @task
        def start() -> str:
            from site_tasks.centre import steps

            with settings(fed):
                return steps.start(Path(path), _run_id())

        @task(map_index_template=SITE_NAME)
        def validate(site: str, site_queues: list[str]) -> int:
            from site_tasks.site import steps

            with at_site(fed, site):
                return steps.validate_site(Path(path), _run_id(), site)

        @task(trigger_rule="all_done")
        def validated() -> None:
            """The join of the validations: the rounds start once every site's has ended."""

        @task.sensor(
            mode="reschedule",
            poke_interval=POKE_S,
            timeout=RUN_TIMEOUT.total_seconds(),
            map_index_template=SITE_NAME,
            trigger_rule="all_done",
            retries=RETRIES,
            retry_delay=RETRY_DELAY,
            retry_exponential_backoff=True,
            execution_timeout=TRAIN_TIMEOUT,
        )
        def train(site: str, site_queues: list[str]) -> PokeReturnValue:
            from site_tasks.site import steps

            if _states("aggregate").get("aggregate") in ENDED:
                raise AirflowFailException(
                    f"{site}: the centre's aggregate failed, so no further prior will come; "
                    "clear the run's failed tasks to resume"
                )
            with at_site(fed, site):
                step = steps.train_step(Path(path), _run_id(), site, wait_s=WAIT_S)
            if BACKOFF_MAX_S > 0 and step.trained is None and not step.done:
                wait = min(BACKOFF_MAX_S, max(POKE_S, step.idle_s / 2))
                when = pendulum.now("UTC") + timedelta(seconds=wait)
                raise AirflowRescheduleException(when)  # type: ignore[no-untyped-call]
            return PokeReturnValue(is_done=step.done, xcom_value=step.next_round - 1)

        @task.sensor(
            mode="reschedule",
            poke_interval=AGGREGATE_POKE_S,
            timeout=RUN_TIMEOUT.total_seconds(),
            trigger_rule="all_done",
            retries=AGGREGATE_RETRIES,
            retry_delay=RETRY_DELAY,
        )
        def aggregate() -> PokeReturnValue:
            from fedmap.server import NoValidUpdates
            from site_tasks.centre import steps
            from site_tasks.centre.server import PriorConflict, QuorumNotMet
            from site_tasks.runs import RoundNotReady

            # out of the run: a site whose validation did not succeed, or whose train task ended
            trains, checks = _states("train"), _states("validate")
            index = {s.name: i for i, s in enumerate(members)}
            ended = {
                s.name
                for i, s in enumerate(contributors)
                if trains.get(f"train_{i}") in ENDED
                or checks.get(f"validate_{index[s.name]}") != "success"
            }
            try:
                with settings(fed):
                    step = steps.aggregate_step(Path(path), _run_id(), ended, read_validation=False)
            except (QuorumNotMet, NoValidUpdates, PriorConflict, RoundNotReady) as exc:
                raise AirflowFailException(str(exc)) from exc  # a decision: no retry changes it
            if step.aggregated is not None:
                get_current_context()["ti"].xcom_push(
                    key=f"round_{step.aggregated}", value=step.as_dict()
                )
            elif not step.done:
                print(f"round {step.round}: waiting for {', '.join(step.waiting_for)}")
            return PokeReturnValue(is_done=step.done, xcom_value=step.as_dict())

        @task(map_index_template=SITE_NAME)
        def finalise(site: str, site_queues: list[str]) -> float:
            from site_tasks.site import steps

            with at_site(fed, site):
                return steps.finalise_site(Path(path), _run_id(), site)

        # all_done: a site whose evaluation fails is left out, not allowed to block the release
        @task(trigger_rule="all_done")
        def register() -> dict[str, Any]:
            """Parent and nested MLflow runs, registered models, equity, and the champion gate."""
            from site_tasks.centre import steps

            with settings(fed):
                result = steps.register_run(Path(path), _run_id(), GATE_TOLERANCE)
            if result is None:
                raise AirflowSkipException("no MLflow server configured: nothing registered")
            return result

        @task(outlets=[champion_asset(fed)])
        def release(result: dict[str, Any]) -> str:
            """Announce a new champion prior; the tier-3 inference DAG is scheduled on it."""
            if result.get("alias") != "champion":
                raise AirflowSkipException(f"no new champion: {result.get('reason')}")
            model, version = result["model"], result["prior_version"]
            get_current_context()["outlet_events"][champion_asset(fed)].extra = {
                "model": model,
                "version": version,
                "uri": f"models:/{model}/{version}",
                "dag_run_id": _run_id(),
            }
            return f"{model}@champion is version {version}"

        @task(trigger_rule="all_done")
        def summarise() -> None:
            """The run's note: sites per round, quorum decisions, the gate's decision, equity."""
            from site_tasks.centre import steps

            registered = get_current_context()["ti"].xcom_pull(task_ids="register")
            state = _states("register").get("register")
            with settings(fed):
                note = steps.run_note(Path(path), _run_id(), registered, state)
            _note(note, ended=[] if state in ("success", "skipped") else [f"register {state}"])

        begin = start()
        checked = validate.partial(site_queues=[s.queue for s in members]).expand(
            site=[s.name for s in members]
        )
        trained = train.partial(site_queues=[s.queue for s in contributors]).expand(
            site=[s.name for s in contributors]
        )
        rounds = aggregate()
        final = finalise.partial(site_queues=[s.queue for s in members]).expand(
            site=[s.name for s in members]
        )
        begin >> checked >> validated() >> [trained, rounds]
        rounds >> final
        registered = register()
        # register, not the trains, ends the run: a site whose training failed is tolerated by the
        # quorum and must not fail the run as a leaf task
        [final, trained] >> registered
        release(registered)  # type: ignore[arg-type]  # an XComArg resolves to the dict
        # beside release, not after it: release stays a leaf, so a run whose rounds failed still
        # ends failed, and summarise still writes its note
        registered >> summarise()

    return federation()


def champion_asset(fed: Federation) -> Asset:
    """Updated whenever the federation's prior gets a new champion version."""
    return Asset(
        name=f"fedmap-{fed.name}-prior-champion",
        uri=f"mlflow-model://fedmap-{fed.name}-prior/champion",
        group="model",
    )


INFERENCE_DOC = """Tier-3 inference for one federation: ``score [site]`` for each tier-3 site.

Runs when ``fedmap_<name>`` releases a new champion prior (the Asset
``fedmap-<name>-prior-champion``), or by hand. Each site validates ``reference.csv`` and
``score.csv`` against the contract (features only), loads
``models:/fedmap-<name>-prior@champion`` (safetensors, checked against its checksum tag), applies
the task recipe (standardising with its own reference rows when the recipe does), and writes
``predictions_<model>_v<version>.csv`` (probabilities, or risk scores for survival) to its output
folder. No training; only counts leave the site. One site's failure does not stop another.
Each score log names the version it scored with, and the version the triggering asset event
announced. ``summarise`` writes the run's note: the version each site scored with, its counts.
"""


def build_inference(fed: Federation) -> Any:
    path = str(fed.path)
    clinics = fed.tier(3)

    @dag(
        dag_id=f"fedmap_{fed.name}_inference",
        schedule=[champion_asset(fed)],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["fedmap", f"federation:{fed.name}", "tier-3"],
        doc_md=INFERENCE_DOC,
        default_args={"retries": 0},
    )
    def inference() -> None:
        @task(
            map_index_template=SITE_NAME,
            retries=RETRIES,
            retry_delay=RETRY_DELAY,
            retry_exponential_backoff=True,
            execution_timeout=TRAIN_TIMEOUT,
        )
        def score(site: str, site_queues: list[str]) -> dict[str, int | str | None]:
            from site_tasks.site import steps

            with settings(fed, site=True):
                result = steps.score_site(Path(path), _run_id(), site)
            events = get_current_context()["triggering_asset_events"]
            announced = [e.extra.get("version") for e in events.get(champion_asset(fed), [])]
            print(
                f"{site}: scored with {result['model']} version {result['version']}; the "
                f"triggering asset event announced version {announced[-1] if announced else '-'}"
            )
            return result

        @task(trigger_rule="all_done")
        def summarise() -> None:
            """The run's note: the model version each site scored with, and its counts."""
            from site_tasks.centre import steps

            ti = get_current_context()["ti"]
            results = ti.xcom_pull(task_ids="score", map_indexes=list(range(len(clinics))))
            names = [s.name for s in clinics]
            found = {n: r for n, r in zip(names, results, strict=True) if r is not None}
            states = _states("score")
            ended = [
                f"score [{n}] {states.get(f'score_{i}')}"
                for i, n in enumerate(names)
                if n not in found
            ]
            _note(steps.inference_note(fed.name, names, found), ended)

        scored = score.partial(site_queues=[s.queue for s in clinics]).expand(
            site=[s.name for s in clinics]
        )
        scored >> summarise()

    return inference()


def broken(path: Path, error: str) -> Any:
    """A federation file that does not load becomes a DAG that says why (its doc and its one
    task's error), so one bad file neither hides the error nor takes the other DAGs down."""
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem)

    @dag(
        dag_id=f"fedmap_{stem}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["fedmap", "config-error"],
        doc_md=f"**The federation file `{path.name}` does not load:**\n\n    {error}\n",
    )
    def invalid() -> None:
        @task
        def config_error() -> None:
            raise AirflowFailException(error)

        config_error()

    return invalid()


for _file in sorted(FEDERATIONS.glob("*.yaml")):
    try:
        _fed = read_federation(_file)
        _fed.require_storage()  # the DAG needs the bucket the centre and the sites share
    except ConfigError as _error:
        globals()[f"fedmap_{_file.stem}"] = broken(_file, str(_error))
        continue
    globals()[f"fedmap_{_fed.name}"] = build(_fed)
    if _fed.tier(3):
        globals()[f"fedmap_{_fed.name}_inference"] = build_inference(_fed)
