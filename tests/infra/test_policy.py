"""The centre's cluster policy routes every mapped site-task instance to its own site's queue.

Airflow cannot map ``queue``, so a mapped site task carries ``partial(site_queues=[...])`` and the
policy's ``task_instance_mutation_hook`` sets each instance's queue from its map index. Checked
with light fakes, and with a real mapped DAG: serialized and deserialized as the scheduler sees it,
the policy registered through Airflow's own plugin manager, task instances built, and built again
by ``refresh_from_task`` as a retry does."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

POLICY_FILE = Path(__file__).resolve().parents[2] / "infra" / "centre" / "airflow_local_settings.py"
QUEUES = ["site-a", "site-b", "site-c"]
SITES = ["a", "b", "c"]


def load_policy() -> ModuleType:
    """The policy file under a fresh name (it is no package; Airflow imports it from config/)."""
    spec = importlib.util.spec_from_file_location(f"local_settings_{uuid.uuid4().hex}", POLICY_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POLICY = load_policy()


def instance(map_index: int, partial: object = None, queue: str = "default") -> SimpleNamespace:
    task = SimpleNamespace() if partial is None else SimpleNamespace(partial_kwargs=partial)
    return SimpleNamespace(task=task, map_index=map_index, queue=queue, executor=None)


# --- light fakes ----------------------------------------------------------------------------------


def test_each_mapped_instance_goes_to_its_sites_queue_and_the_edge_workers() -> None:
    for index, queue in enumerate(QUEUES):
        ti = instance(index, {"op_kwargs": {"site_queues": QUEUES}})
        POLICY.task_instance_mutation_hook(ti)
        assert (ti.queue, ti.executor) == (queue, "EdgeExecutor")
        POLICY.task_instance_mutation_hook(ti, None)  # idempotent: the scheduler applies it again
        assert (ti.queue, ti.executor) == (queue, "EdgeExecutor")


def test_a_classic_operators_own_site_queues_argument_counts_too() -> None:
    ti = instance(2, {"site_queues": tuple(QUEUES)})
    POLICY.task_instance_mutation_hook(ti)
    assert (ti.queue, ti.executor) == ("site-c", "EdgeExecutor")


@pytest.mark.parametrize(
    ("map_index", "partial"),
    [
        (-1, {"op_kwargs": {"site_queues": QUEUES}}),  # the unmapped placeholder before expansion
        (3, {"op_kwargs": {"site_queues": QUEUES}}),  # past the end: leave it, do not guess
        (0, {"op_kwargs": {"x": 1}}),  # a mapped task without site_queues
        (0, {"op_kwargs": {"site_queues": "site-a"}}),  # not a list of queues
        (0, {"op_kwargs": {"site_queues": [1, 2]}}),
        (0, None),  # an unmapped task: no partial_kwargs at all
    ],
)
def test_other_instances_are_left_as_they_are(map_index: int, partial: object) -> None:
    ti = instance(map_index, partial, queue="somewhere")
    POLICY.task_instance_mutation_hook(ti)
    assert (ti.queue, ti.executor) == ("somewhere", None)


def test_an_instance_without_a_task_is_left_as_it_is() -> None:
    ti = SimpleNamespace(task=None, map_index=0, queue="default", executor=None)
    POLICY.task_instance_mutation_hook(ti)
    assert (ti.queue, ti.executor) == ("default", None)


def test_a_site_on_the_centres_queue_keeps_the_tasks_executor() -> None:
    ti = instance(1, {"op_kwargs": {"site_queues": ["site-a", "default"]}}, queue="site-x")
    POLICY.task_instance_mutation_hook(ti)
    assert (ti.queue, ti.executor) == ("default", None)


def test_the_task_policy_writes_a_mapped_operators_executor_into_its_partial_arguments() -> None:
    mapped = SimpleNamespace(queue="sites", executor=None, partial_kwargs={"op_kwargs": {}})
    centre = SimpleNamespace(queue="default", executor=None, partial_kwargs={})
    for task in (mapped, centre):
        POLICY.task_policy(task)
    assert mapped.partial_kwargs["executor"] == "EdgeExecutor"
    assert "executor" not in centre.partial_kwargs


def test_the_policy_imports_nothing_heavy() -> None:
    imports = [
        line.split()[1]
        for line in POLICY_FILE.read_text().splitlines()
        if line.startswith(("import ", "from "))
    ]
    assert set(imports) <= {"__future__", "collections.abc", "typing"}, imports


# --- a real mapped DAG, as the scheduler sees it ------------------------------------------------


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The policy registered the way Airflow registers ``airflow_local_settings`` (pluggy, with
    its signature checks and shims), in place of the process's own policy plugins."""
    import pluggy
    from airflow import policies, settings

    manager = pluggy.PluginManager(policies.local_settings_hookspec.project_name)
    manager.add_hookspecs(policies)
    manager.register(policies.DefaultPolicy)
    module = load_policy()
    registered = policies.make_plugin_from_local_settings(
        manager, module, {"task_policy", "task_instance_mutation_hook"}
    )
    assert registered == {"task_policy", "task_instance_mutation_hook"}
    monkeypatch.setattr(settings, "get_policy_plugin_manager", lambda: manager)
    yield module


def serialized_dag(partial_queue: str | None) -> Any:
    """A DAG with a mapped site task and a centre task, the policy applied as the DAG processor
    applies it, then serialized and deserialized as the scheduler reads it."""
    from airflow import settings
    from airflow.sdk import dag, task
    from airflow.serialization.serialized_objects import DagSerialization

    @dag(dag_id=f"policy_{uuid.uuid4().hex[:8]}", schedule=None)
    def federation() -> None:
        @task(map_index_template="{{ site }}")
        def train(site: str, site_queues: list[str]) -> None:
            del site, site_queues

        @task
        def aggregate() -> None:
            return None

        site_task = train if partial_queue is None else train.override(queue=partial_queue)
        site_task.partial(site_queues=QUEUES).expand(site=SITES) >> aggregate()

    parsed = federation()
    for each in parsed.tasks:
        settings.task_policy(each)  # type: ignore[no-untyped-call]  # as the DagBag applies it
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(parsed))


@pytest.mark.parametrize("partial_queue", [None, "sites"])
def test_mapped_instances_of_a_real_dag_run_on_their_sites_queues(
    installed: ModuleType, partial_queue: str | None
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.definitions.mappedoperator import SerializedMappedOperator

    dag = serialized_dag(partial_queue)
    train = dag.get_task("train")
    assert isinstance(train, SerializedMappedOperator)
    assert train.queue == (partial_queue or "default")
    assert train.executor == (None if partial_queue is None else "EdgeExecutor")
    instances = [
        TaskInstance(train, run_id="manual__1", map_index=i, dag_version_id=None)
        for i in range(len(SITES))
    ]
    assert [(ti.queue, ti.executor) for ti in instances] == [(q, "EdgeExecutor") for q in QUEUES]
    for ti in instances:  # a retry: the scheduler resets queue and executor from the task
        ti.refresh_from_task(train)
    assert [(ti.queue, ti.executor) for ti in instances] == [(q, "EdgeExecutor") for q in QUEUES]

    placeholder = TaskInstance(train, run_id="manual__1", map_index=-1, dag_version_id=None)
    assert placeholder.queue == train.queue  # before expansion: untouched
    placeholder.map_index = 0  # what expansion does to the placeholder, then the hook again
    installed.task_instance_mutation_hook(placeholder, None)
    assert (placeholder.queue, placeholder.executor) == ("site-a", "EdgeExecutor")

    centre = TaskInstance(dag.get_task("aggregate"), run_id="manual__1", dag_version_id=None)
    assert (centre.queue, centre.executor) == ("default", None)


# --- many sites on few edge workers (site_tasks/local/edge.py) -----------------------------------


def test_one_worker_per_site_by_default_named_after_the_site() -> None:
    from site_tasks.local.edge import Worker, spread

    sites = [("site-01", "q1"), ("site-02", "q2")]
    expected = [Worker("site-01", ("q1",)), Worker("site-02", ("q2",))]
    assert spread(sites, None) == spread(sites, 2) == spread(sites, 5) == expected
    assert expected[0].argv == ["--queues", "q1", "--edge-hostname", "site-01"]


def test_many_sites_are_dealt_round_robin_over_few_workers() -> None:
    from site_tasks.local.edge import QUEUES_FIELD, spread

    sites = [(f"site-{i:03d}", f"site-{i:03d}") for i in range(150)]
    pool = spread(sites, 10)
    assert [w.name for w in pool] == [f"edge-{i:02d}" for i in range(1, 11)]
    served = [q for w in pool for q in w.queues]
    assert sorted(served) == [q for _, q in sites]  # every queue, on exactly one worker
    assert {len(w.queues) for w in pool} == {15}
    assert pool[0].queues[:2] == ("site-000", "site-010")  # neighbours go to different workers
    assert pool[1].queues[0] == "site-001"
    assert all(len(str(list(w.queues))) <= QUEUES_FIELD for w in pool)
    assert pool[0].argv[:2] == ["--queues", ",".join(pool[0].queues)]
    with pytest.raises(ValueError, match="use at least 8 workers"):
        spread(sites, 5)  # 30 queues each: more than edge3 can store for one worker
    with pytest.raises(ValueError, match="at least 1"):
        spread(sites, 0)


def test_sites_sharing_a_queue_share_a_worker() -> None:
    from site_tasks.local.edge import Worker, spread

    sites = [("a", "north"), ("b", "north"), ("c", "south")]
    assert spread(sites, 2) == [Worker("edge-1", ("north",)), Worker("edge-2", ("south",))]


UNDOCUMENTED = frozenset({"AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES"})
"""Read by Airflow 3.3 but left out of its option list ("intentionally undocumented", in
``SchedulerJobRunner.__init__``)."""


def test_the_scale_sets_real_airflow_options_from_the_slots_and_the_sites(tmp_path: Path) -> None:
    from airflow.configuration import conf

    from site_tasks.local.edge import CENTRE_SLOTS, Deployment, Scale, default_slots

    assert default_slots(3) == min(3, default_slots(10_000))
    assert default_slots(1) == 1
    env = Scale(sites=1500, slots=4).centre_env()
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(4 + CENTRE_SLOTS)
    assert env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] == str(4 + CENTRE_SLOTS)
    assert env["AIRFLOW__CORE__MAX_MAP_LENGTH"] == "1500"
    assert Scale(sites=3, slots=3).centre_env()["AIRFLOW__CORE__MAX_MAP_LENGTH"] == "1024"
    d = Deployment(tmp_path)
    everything = {**d.centre_env(Scale(sites=3, slots=3)), **d.worker_env("edge-1")}
    assert d.centre_env(Scale(sites=3, slots=3))["AIRFLOW__CORE__PARALLELISM"] == "5"
    assert d.worker_env("edge-1")["FEDMAP_WORKER"] == "edge-1"
    known = conf.configuration_description  # Airflow's and the providers' (edge3) options
    for name in everything.keys() - UNDOCUMENTED:
        if name.startswith("AIRFLOW__"):
            section, key = name.removeprefix("AIRFLOW__").lower().split("__")
            assert key in known.get(section, {}).get("options", {}), name
