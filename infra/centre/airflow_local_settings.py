"""Airflow cluster policy of the coordinating centre: a task on a site's queue runs on that site's
edge worker.

The centre runs two executors, ``LocalExecutor`` (the default: ``start``, ``aggregate``,
``register`` and ``release`` run here, on the default queue) and ``EdgeExecutor`` (every site task:
``validate``, ``train``, ``finalise``, ``score``, on the site's own queue). Airflow sends a task to
a non-default executor only when the task names it, so this policy names it for every task that
left the default queue. Without it, LocalExecutor would ignore the queue and run the site's task
at the centre, where the site's data is not.

Site tasks are mapped over the sites, and Airflow cannot map ``queue``: a mapped operator has one
queue, ``partial()``'s. So ``dags/fedmap_federation.py`` gives each mapped site task
``.partial(site_queues=[...]).expand(site=[...])``, the queue of the site at each map index, and
``task_instance_mutation_hook`` routes every mapped instance to its site's queue. The scheduler
applies the hook when it creates an instance and again in ``TaskInstance.refresh_from_task``
(which first resets ``queue`` and ``executor`` from the task), so a retry stays on the site's queue.

The image copies this file to ``$AIRFLOW_HOME/config/``, which Airflow puts on ``sys.path``; the
DAG processor applies ``task_policy`` to every task it parses, the scheduler applies
``task_instance_mutation_hook`` to every task instance. It imports nothing heavy: every Airflow
process imports it at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

CENTRE_QUEUE = "default"
"""``[operators] default_queue``: the queue of every task that names none (the centre's own)."""
SITE_EXECUTOR = "EdgeExecutor"
"""``airflow.providers.edge3.executors.EdgeExecutor`` in ``AIRFLOW__CORE__EXECUTOR``."""
SITE_QUEUES = "site_queues"
"""The ``partial()`` argument of a mapped site task: the queue of the site at each map index."""


class Task(Protocol):
    queue: str
    executor: str | None


class TaskInstance(Protocol):
    map_index: int
    queue: str
    executor: str | None

    @property
    def task(self) -> Any: ...


def task_policy(task: Task) -> None:
    """Send a task on a site's queue to the edge workers, unless it already names an executor.

    A mapped operator's ``executor`` is read-only (it reads ``partial()``'s arguments), so the
    policy writes it there."""
    if task.queue == CENTRE_QUEUE or task.executor is not None:
        return
    partial = getattr(task, "partial_kwargs", None)
    if isinstance(partial, dict):
        partial["executor"] = SITE_EXECUTOR
    else:
        task.executor = SITE_EXECUTOR


def site_queues(task: object) -> Sequence[str] | None:
    """The ``site_queues`` a mapped task got from ``partial()`` (a TaskFlow task's ``op_kwargs``,
    or a classic operator's own argument), or None for any other task."""
    partial = getattr(task, "partial_kwargs", None)
    if not isinstance(partial, Mapping):
        return None
    op_kwargs = partial.get("op_kwargs")
    queues = op_kwargs.get(SITE_QUEUES) if isinstance(op_kwargs, Mapping) else None
    if queues is None:
        queues = partial.get(SITE_QUEUES)
    if isinstance(queues, list | tuple) and all(isinstance(q, str) for q in queues):
        return queues
    return None


def task_instance_mutation_hook(task_instance: TaskInstance, dag_run: object = None) -> None:
    """Route instance ``i`` of a mapped site task to ``site_queues[i]``, and to the edge workers
    unless that is the centre's queue. Idempotent; an unmapped instance, a task without
    ``site_queues`` or an index past its end is left as it is."""
    index = task_instance.map_index
    queues = site_queues(task_instance.task)
    if queues is None or not 0 <= index < len(queues):
        return
    task_instance.queue = queues[index]
    if queues[index] != CENTRE_QUEUE:
        task_instance.executor = SITE_EXECUTOR
