"""Airflow cluster policy of the coordinating centre: a task on a site's queue runs on that site's
edge worker.

The centre runs two executors, ``LocalExecutor`` (the default: ``start``, ``aggregate``,
``register`` and ``release`` run here, on the default queue) and ``EdgeExecutor`` (every site task:
``validate``, ``train``, ``evaluate``, ``finetune``, ``score``, on the site's own queue). Airflow
sends a task to a non-default executor only when the task names it, and
``dags/fedmap_federation.py`` sets only ``queue=``, so this policy names it for every task that
left the default queue. Without it, LocalExecutor would ignore the queue and run the site's task
at the centre, where the site's data is not.

The image copies this file to ``$AIRFLOW_HOME/config/``, which Airflow puts on ``sys.path``; the
DAG processor applies ``task_policy`` to every task it parses.
"""

from __future__ import annotations

from typing import Protocol

CENTRE_QUEUE = "default"
"""``[operators] default_queue``: the queue of every task that names none (the centre's own)."""
SITE_EXECUTOR = "EdgeExecutor"
"""``airflow.providers.edge3.executors.EdgeExecutor`` in ``AIRFLOW__CORE__EXECUTOR``."""


class Task(Protocol):
    queue: str
    executor: str | None


def task_policy(task: Task) -> None:
    """Send a task on a site's queue to the edge workers, unless it already names an executor."""
    if task.queue != CENTRE_QUEUE and task.executor is None:
        task.executor = SITE_EXECUTOR
