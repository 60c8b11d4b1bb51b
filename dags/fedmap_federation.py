"""One Airflow DAG per federation file in ``federations/``: ``fedmap_<name>``.

The graph of a run:

1. ``start``: the bucket, and the prior of round 1 (Algorithm 1: a random site's model).
2. ``validate.<site>``: every site with data checks it against the federation's contract. A site
   that fails is *skipped* for this run (the reason is in its log) and the others go on.
3. ``round_<t>.train_<site>``: each tier-1 site runs the local MAP step under the round's prior
   on its own queue, with retries and exponential back-off.
4. ``round_<t>.aggregate``: runs once every train task of the round has finished, whatever its
   state; it checks each update, enforces the quorum (``min_sites``), and writes the next prior.
   Below the quorum the round fails naming the missing sites.
5. ``finalise.evaluate_<site>``: each tier-1 site scores its own model and the final prior on its
   validation split; ``finalise.finetune_<site>``: each tier-2 site fine-tunes the final prior
   with the same local MAP objective, keeps it, and reports its scores. Only metrics leave.
6. ``register``: one MLflow parent run per DAG run with a nested run per site (metrics per
   round), registered models ``fedmap-<name>-<site>`` and ``fedmap-<name>-prior``, and the gate:
   the new prior is ``champion`` unless its mean validation accuracy is more than
   ``$FEDMAP_GATE_TOLERANCE`` below the champion's (then ``challenger``). Skipped when
   ``$MLFLOW_TRACKING_URI`` is not set.

Task bodies are a few lines over ``site_tasks.rounds``; torch and friends load inside tasks only.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import TaskGroup, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from site_tasks.plan import FederationPlan, read_plan

FEDERATIONS = Path(
    os.environ.get("FEDMAP_FEDERATIONS_DIR", Path(__file__).resolve().parents[1] / "federations")
)
RETRIES = int(os.environ.get("FEDMAP_TRAIN_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("FEDMAP_RETRY_DELAY_S", "30")))
TRAIN_TIMEOUT = timedelta(minutes=float(os.environ.get("FEDMAP_TRAIN_TIMEOUT_MIN", "60")))
GATE_TOLERANCE = float(os.environ.get("FEDMAP_GATE_TOLERANCE", "0.01"))


def _run_id() -> str:
    return str(get_current_context()["run_id"])


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

                        return rounds.train_site(Path(path), _run_id(), name, round_)

                    step = train(contributor.name, t)
                    validated[contributor.name] >> step
                    previous >> step
                    trains.append(step)

                @task(task_id="aggregate", trigger_rule="all_done")
                def aggregate(round_: int) -> dict[str, float]:
                    from site_tasks import rounds

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

                    if tier == 1:
                        return rounds.evaluate_site(Path(path), _run_id(), name)
                    return rounds.finetune_site(Path(path), _run_id(), name)

                step = finalise(site.name, site.tier)
                previous >> step
                validated[site.name] >> step
                finals.append(step)

        @task(trigger_rule="none_failed")
        def register() -> dict[str, str]:
            """Parent and nested MLflow runs, registered models, and the champion gate."""
            from site_tasks import rounds

            if not os.environ.get("MLFLOW_TRACKING_URI"):
                raise AirflowSkipException("MLFLOW_TRACKING_URI is not set: nothing registered")
            return rounds.register_run(Path(path), _run_id(), GATE_TOLERANCE)

        finals >> register()

    return federation()


for _file in sorted(FEDERATIONS.glob("*.yaml")):
    _plan = read_plan(_file)
    globals()[f"fedmap_{_plan.name}"] = build(_plan)
