"""One Airflow DAG per federation file in ``federations/``: ``fedmap_<name>``.

The graph of a run:

1. ``start``: the bucket, and the prior of round 1 (Algorithm 1: a random site's model).
2. ``validate.<site>``: every site with data checks it against the federation's contract. A site
   that fails is *skipped* for this run (the reason is in its log) and the others go on.
3. ``round_<t>.train_<site>``: each tier-1 site reads its data with the federation's task recipe
   (binary or survival) and runs the local MAP step under the round's prior (Gaussian, or a
   learned diagonal or ICNN prior) on its own queue, with retries and exponential back-off.
4. ``round_<t>.aggregate``: runs once every train task of the round has finished, whatever its
   state; it checks each update, enforces the quorum (``min_sites``), and writes the next prior.
   Below the quorum the round fails naming the missing sites. A learned prior's state travels
   with the next prior's mean.
5. ``finalise.evaluate_<site>``: each tier-1 site scores its own model, the final prior's mean and
   a local-only model on its validation split (accuracy, balanced accuracy, ROC-AUC; or the
   C-index for survival); ``finalise.finetune_<site>``: each tier-2 site fine-tunes the final prior
   with the same local MAP objective, keeps it, and reports its scores. Only metrics leave.
6. ``register``: one MLflow parent run per DAG run with a nested run per tier-1 site (metrics
   per round), registered models ``fedmap-<name>-<site>`` and ``fedmap-<name>-prior`` (the prior's
   mean), the equity summary (each site's gain over its local model, the worst-served site's
   gain, the spread across sites: in the task log, ``equity.md`` and ``equity_*`` metrics on the
   parent run, and the task's return value), and the gate: the new prior is ``champion`` unless
   its mean validation score (accuracy, or C-index for survival) is more than
   ``$FEDMAP_GATE_TOLERANCE`` below the champion's (then ``challenger``). Skipped when no MLflow
   server is configured (``mlflow`` in the file, its connection, or ``$MLFLOW_TRACKING_URI``);
   the equity summary is then only in its log.
7. ``release``: when the new prior became ``champion``, it updates the Asset
   ``fedmap-<name>-prior-champion``, which schedules ``fedmap_<name>_inference``: every tier-3
   site scores its ``score.csv`` with the champion (no training; only counts leave the site).

Storage and MLflow settings the file leaves out come from the Airflow connections it names
(``storage.connection``, ``mlflow.connection``), put into each task's environment.

Task bodies are a few lines over ``site_tasks.rounds``; torch and friends load inside tasks only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Asset, TaskGroup, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowNotFoundException, AirflowSkipException

from site_tasks.plan import FederationPlan, PlanError, read_plan

FEDERATIONS = Path(
    os.environ.get("FEDMAP_FEDERATIONS_DIR", Path(__file__).resolve().parents[1] / "federations")
)
RETRIES = int(os.environ.get("FEDMAP_TRAIN_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("FEDMAP_RETRY_DELAY_S", "30")))
TRAIN_TIMEOUT = timedelta(minutes=float(os.environ.get("FEDMAP_TRAIN_TIMEOUT_MIN", "60")))
GATE_TOLERANCE = float(os.environ.get("FEDMAP_GATE_TOLERANCE", "0.01"))


def _run_id() -> str:
    return str(get_current_context()["run_id"])


def _environment(plan: FederationPlan, site: bool) -> dict[str, str]:
    """The federation's Airflow connections as the variables boto3 and MLflow read. A site's
    worker may lack the MLflow connection (tiers 1-2 never use it); the centre may not."""
    from airflow.sdk import Connection

    env: dict[str, str] = {}
    if plan.storage_connection:
        s3 = Connection.get(plan.storage_connection)
        extra = s3.extra_dejson
        for name, value in (
            ("AWS_ACCESS_KEY_ID", s3.login),
            ("AWS_SECRET_ACCESS_KEY", s3.password),
            ("AWS_ENDPOINT_URL_S3", extra.get("endpoint_url") or s3.host),
        ):
            if value:
                env[name] = str(value)
    if plan.mlflow_connection:
        try:
            server = Connection.get(plan.mlflow_connection)
        except AirflowNotFoundException:
            if not site:
                raise
            return env
        host = str(server.host or "")
        if "://" not in host:
            port = f":{server.port}" if server.port else ""
            host = f"{server.schema or 'http'}://{host}{port}"
        env["MLFLOW_TRACKING_URI"] = host
    return env


@contextmanager
def settings(plan: FederationPlan, site: bool = False) -> Iterator[None]:
    """Run a task body with the federation's connections in its environment, then restore it.
    ``site``: the task runs on a site's queue (validate, train, finalise, score)."""
    env = _environment(plan, site)
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


def build(plan: FederationPlan) -> Any:
    path = str(plan.path)

    @dag(
        dag_id=f"fedmap_{plan.name}",
        schedule=plan.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["fedmap", f"federation:{plan.name}"],
        doc_md=__doc__,
        default_args={"retries": 0},
    )
    def federation() -> None:
        @task
        def start() -> str:
            from site_tasks import rounds

            with settings(plan):
                return rounds.start(Path(path), _run_id())

        begin = start()
        validated = {}
        with TaskGroup("validate"):
            for site in plan.sites:
                if site.tier == 3:
                    continue

                @task(task_id=site.name, queue=site.queue)
                def validate(name: str) -> int:
                    from site_tasks import rounds

                    try:
                        with settings(plan, site=True):
                            return rounds.validate_site(Path(path), _run_id(), name)
                    except rounds.SiteExcluded as exc:
                        raise AirflowSkipException(f"{name} excluded from this run: {exc}") from exc

                validated[site.name] = validate(site.name)
                begin >> validated[site.name]

        previous: Any = begin
        for t in range(1, plan.rounds + 1):
            with TaskGroup(f"round_{t}"):
                trains = []
                for contributor in plan.tier(1):

                    @task(
                        task_id=f"train_{contributor.name}",
                        queue=contributor.queue,
                        retries=RETRIES,
                        retry_delay=RETRY_DELAY,
                        retry_exponential_backoff=True,
                        execution_timeout=TRAIN_TIMEOUT,
                    )
                    def train(name: str, round_: int) -> str:
                        from site_tasks import rounds

                        with settings(plan, site=True):
                            return rounds.train_site(Path(path), _run_id(), name, round_)

                    step = train(contributor.name, t)
                    validated[contributor.name] >> step
                    previous >> step
                    trains.append(step)

                @task(task_id="aggregate", trigger_rule="all_done")
                def aggregate(round_: int) -> dict[str, float]:
                    from site_tasks import rounds

                    # A round whose prior never came (an earlier task failed) fails with
                    # RoundNotReady naming that cause; it must fail, not skip, or the run's
                    # leaves would end skipped and Airflow would call the run a success.
                    with settings(plan):
                        return rounds.aggregate(Path(path), _run_id(), round_)

                done = aggregate(t)
                trains >> done
                previous = done

        finals: list[Any] = []
        with TaskGroup("finalise"):
            for site in plan.sites:
                if site.tier == 3:
                    continue

                @task(
                    task_id=f"evaluate_{site.name}" if site.tier == 1 else f"finetune_{site.name}",
                    queue=site.queue,
                )
                def finalise(name: str, tier: int) -> float:
                    from site_tasks import rounds

                    with settings(plan, site=True):
                        if tier == 1:
                            return rounds.evaluate_site(Path(path), _run_id(), name)
                        return rounds.finetune_site(Path(path), _run_id(), name)

                step = finalise(site.name, site.tier)
                previous >> step
                validated[site.name] >> step
                finals.append(step)

        # all_done: a site whose evaluation fails is left out, not allowed to block the release
        @task(trigger_rule="all_done")
        def register() -> dict[str, Any]:
            """Parent and nested MLflow runs, registered models, equity, and the champion gate."""
            from site_tasks import rounds

            with settings(plan):
                result = rounds.register_run(Path(path), _run_id(), GATE_TOLERANCE)
            if result is None:
                raise AirflowSkipException("no MLflow server configured: nothing registered")
            return result

        @task(outlets=[champion_asset(plan)])
        def release(result: dict[str, Any]) -> str:
            """Announce a new champion prior; the tier-3 inference DAG is scheduled on it."""
            if result.get("alias") != "champion":
                raise AirflowSkipException(f"no new champion: {result.get('reason')}")
            return f"{result['model']}@champion is version {result['prior_version']}"

        registered = register()
        finals >> registered
        release(registered)  # type: ignore[arg-type]  # an XComArg resolves to the dict

    return federation()


def champion_asset(plan: FederationPlan) -> Asset:
    """Updated whenever the federation's prior gets a new champion version."""
    return Asset(
        name=f"fedmap-{plan.name}-prior-champion",
        uri=f"mlflow-model://fedmap-{plan.name}-prior/champion",
        group="model",
    )


INFERENCE_DOC = """Tier-3 inference for one federation: ``score.<site>`` for each tier-3 site.

Runs when ``fedmap_<name>`` releases a new champion prior (the Asset
``fedmap-<name>-prior-champion``), or by hand. Each site validates ``reference.csv`` and
``score.csv`` against the contract (features only), loads
``models:/fedmap-<name>-prior@champion`` (safetensors, checked against its checksum tag), applies
the task recipe (standardising with its own reference rows when the recipe does), and writes
``predictions_<model>_v<version>.csv`` (probabilities, or risk scores for survival) to its output
folder. No training; only counts leave the site. One site's failure does not stop another.
"""


def build_inference(plan: FederationPlan) -> Any:
    path = str(plan.path)

    @dag(
        dag_id=f"fedmap_{plan.name}_inference",
        schedule=[champion_asset(plan)],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["fedmap", f"federation:{plan.name}", "tier-3"],
        doc_md=INFERENCE_DOC,
        default_args={"retries": 0},
    )
    def inference() -> None:
        with TaskGroup("score"):
            for site in plan.tier(3):

                @task(
                    task_id=site.name,
                    queue=site.queue,
                    retries=RETRIES,
                    retry_delay=RETRY_DELAY,
                    retry_exponential_backoff=True,
                    execution_timeout=TRAIN_TIMEOUT,
                )
                def score(name: str) -> dict[str, int | str | None]:
                    from site_tasks import rounds

                    with settings(plan, site=True):
                        return rounds.score_site(Path(path), _run_id(), name)

                score(site.name)

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
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(error)

        config_error()

    return invalid()


for _file in sorted(FEDERATIONS.glob("*.yaml")):
    try:
        _plan = read_plan(_file)
    except PlanError as _error:
        globals()[f"fedmap_{_file.stem}"] = broken(_file, str(_error))
        continue
    globals()[f"fedmap_{_plan.name}"] = build(_plan)
    if _plan.tier(3):
        globals()[f"fedmap_{_plan.name}_inference"] = build_inference(_plan)
