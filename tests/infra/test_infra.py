"""The deployment files in ``infra/``. They cannot start here (no Docker engine), so this checks
what would stop them first: every YAML and JSON file parses; each compose file's services exist,
build from Dockerfiles whose COPY sources exist, mount files that exist and use only variables
its env template defines; the federation example loads and fits the site bundle's paths; the
centre and the sites agree on paths and versions; site tasks reach the edge workers; and a site's
MinIO policy (rendered from ``site_tasks.access``) lets it write only its own keys and read only
the priors and its own keys."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
import uuid
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

from fedmap import schema
from site_tasks.federation import load_federation
from site_tasks.runs import run_name
from site_tasks.storage import Keys

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CENTRE = INFRA / "centre"
SITE = INFRA / "site"
COMPOSE_FILES = (CENTRE / "compose.yaml", SITE / "compose.yaml")
EXAMPLE = SITE / "federation.example.yaml"
RUN = run_name("scheduled__2026-11-23T00:00:00+00:00")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+x}; $${...}
# is an escaped dollar and no variable.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+][^}]*)?\}")
BARE_VARIABLE = re.compile(r"(?<!\$)\$(?![{$])[A-Za-z_]")
SHELL_VARIABLE = re.compile(r"\$\{?([A-Z][A-Za-z0-9_]*)")
CADDY_VARIABLE = re.compile(r"\{\$([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")
IMAGE_ENVIRONMENT = frozenset({"POSTGRES_USER"})
"""Variables the images set themselves (postgres: POSTGRES_USER defaults to postgres)."""


def load(path: Path) -> ModuleType:
    """Import a file of infra/ (not a package) under a fresh name."""
    spec = importlib.util.spec_from_file_location(f"infra_{uuid.uuid4().hex}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POLICY = load(SITE / "policy.py")


def compose(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def services(path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose(path)["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of every volume, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            found.append((parts[0], parts[1], read_only))
        else:
            found.append(
                (volume.get("source", ""), volume["target"], bool(volume.get("read_only")))
            )
    return found


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~", "$"))


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Each service this one waits for, with its condition."""
    found = service.get("depends_on") or {}
    if isinstance(found, list):
        return {name: "service_started" for name in found}
    return {name: spec.get("condition", "service_started") for name, spec in found.items()}


def env_files(service: dict[str, Any]) -> list[str]:
    found = service.get("env_file") or []
    entries = [found] if isinstance(found, str | dict) else found
    return [entry if isinstance(entry, str) else entry["path"] for entry in entries]


def env_template(folder: Path) -> Path:
    """The one committed env template next to a compose file (.env.example or <name>.env.example)."""
    (template,) = set(folder.glob("*.env.example"))  # pathlib's * also matches an empty name
    return template


def env_values(path: Path) -> dict[str, str]:
    """NAME=value lines of an env file; quotes stripped, comments and blank lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def required_variables(text: str) -> set[str]:
    """Variables a compose file needs from its env file: all but those with a default."""
    return {
        name
        for name, modifier in VARIABLE.findall(text)
        if not modifier or modifier.lstrip(":").startswith("?")
    }


def builds() -> Iterator[tuple[str, Path, Path]]:
    """(service, build context, Dockerfile) of every built service."""
    for path in COMPOSE_FILES:
        for name, service in services(path).items():
            if "build" not in service:
                continue
            build = service["build"]
            build = {"context": build} if isinstance(build, str) else build
            context = (path.parent / build.get("context", ".")).resolve()
            yield (
                f"{path.parent.name}/{name}",
                context,
                context / build.get("dockerfile", "Dockerfile"),
            )


BUILDS = sorted(builds())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    found, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        current = ""
    return found


def copy_sources(arguments: str) -> list[str] | None:
    """The sources of a COPY or ADD; None when it copies from another stage or image."""
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    if any(word.startswith("--from") for word in words):
        return None
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in instructions(dockerfile):
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, equals, value = word.partition("=")
                if equals:
                    env[name] = value
    return env


# --- every file parses ---------------------------------------------------------------------------


STRUCTURED = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), *INFRA.rglob("*.json")])


def test_every_yaml_and_json_file_parses() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in STRUCTURED}
    assert names >= {
        "centre/compose.yaml",
        "centre/minio/centre-policy.json",
        "centre/minio/mlflow-policy.json",
        "site/compose.yaml",
        "site/federation.example.yaml",
    }
    for path in STRUCTURED:
        text = path.read_text()
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        assert isinstance(document, dict) and document, path


# --- compose files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.parent.name)
def test_compose_services_reference_what_exists(path: Path) -> None:
    document = compose(path)
    assert isinstance(document["services"], dict) and document["services"]
    named_volumes = set(document.get("volumes") or {})
    defined = set(env_values(env_template(path.parent)))
    for name, service in document["services"].items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        for env_file in env_files(service):
            # the real env file holds secrets and is never committed; its template is
            template = path.parent / f"{env_file}.example"
            assert (path.parent / env_file).is_file() or template.is_file(), env_file
        for source, target, _ in mounts(service):
            assert target.startswith("/"), f"{name}: {target}"
            if not is_bind(source):
                assert source in named_volumes, f"{name}: undeclared volume {source}"
            elif "${" in source:
                assert required_variables(source) <= defined, f"{name}: {source}"
            else:
                assert (path.parent / source).exists(), f"{name}: {source} does not exist"
        for dependency in depends_on(service):
            assert dependency in document["services"], f"{name} waits for unknown {dependency}"
    for section in ("configs", "secrets"):
        for name, spec in (document.get(section) or {}).items():
            if "file" in spec:
                assert (path.parent / spec["file"]).is_file(), f"{section}.{name}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.parent.name)
def test_waited_for_services_report_their_state(path: Path) -> None:
    found = services(path)
    for service in found.values():
        for dependency, condition in depends_on(service).items():
            if condition == "service_healthy":
                assert found[dependency].get("healthcheck", {}).get("test"), dependency
            if condition == "service_completed_successfully":
                assert found[dependency].get("restart") == "no", f"{dependency} is one-shot"


def test_the_centre_services_have_healthchecks() -> None:
    found = services(CENTRE / "compose.yaml")
    for name in ("postgres", "minio", "airflow-api", "mlflow"):
        assert found[name].get("healthcheck", {}).get("test"), name


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.parent.name)
def test_the_env_template_defines_every_variable(path: Path) -> None:
    text = path.read_text()
    assert not BARE_VARIABLE.search(text), "write ${NAME}, or $$ for a literal dollar"
    template = env_template(path.parent)
    values = env_values(template)
    missing = required_variables(text) - set(values)
    assert not missing, f"{template.name} lacks {sorted(missing)}"
    for name, value in values.items():
        if SECRET_NAME.search(name):
            assert value.startswith("change-me"), f"{template.name}: {name} holds a real value"


def test_the_centre_env_template_has_no_unused_variable() -> None:
    # the centre's .env only feeds compose.yaml (no service reads it whole), so each variable
    # must be used there
    text = (CENTRE / "compose.yaml").read_text()
    used = {name for name, _ in VARIABLE.findall(text)}
    assert set(env_values(CENTRE / ".env.example")) <= used


def test_mounted_scripts_and_configs_get_their_variables() -> None:
    checked = set()
    for path in COMPOSE_FILES:
        for name, service in services(path).items():
            given = set(environment(service)) | IMAGE_ENVIRONMENT
            for source, _, _ in mounts(service):
                if not is_bind(source) or "${" in source:
                    continue
                root = path.parent / source
                for file in [root] if root.is_file() else sorted(root.rglob("*")):
                    if file.suffix == ".sh":
                        needed = set(SHELL_VARIABLE.findall(file.read_text()))
                    elif file.name == "Caddyfile":
                        needed = set(CADDY_VARIABLE.findall(file.read_text()))
                    else:
                        continue
                    assert needed <= given, f"{name}: {file.name} needs {sorted(needed - given)}"
                    checked.add(file.name)
    assert checked == {"Caddyfile", "init-databases.sh", "init.sh"}


def test_the_proxy_forwards_to_services_that_exist() -> None:
    found = services(CENTRE / "compose.yaml")
    caddyfile = (CENTRE / "Caddyfile").read_text()
    upstreams = re.findall(r"reverse_proxy\s+([a-z0-9-]+):(\d+)", caddyfile)
    assert {host for host, _ in upstreams} == {"airflow-api", "minio", "mlflow"}
    assert all(host in found for host, _ in upstreams)
    # the paths edge workers use are the ones the proxy opens to them
    site = env_values(SITE / "site.env.example")
    centre = environment(found["airflow-api"])
    assert "@edge path /edge_worker/* /execution/*" in caddyfile
    assert site["AIRFLOW__EDGE__API_URL"].endswith("/edge_worker/v1/rpcapi")
    assert centre["AIRFLOW__EDGE__API_URL"].endswith("/edge_worker/v1/rpcapi")
    assert site["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    for name in ("AIRFLOW__EDGE__API_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        assert site[name].startswith("https://"), name
    for name in ("AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI"):
        assert site[name].startswith("https://"), name


# --- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("service", "context", "dockerfile"), BUILDS, ids=[b[0] for b in BUILDS])
def test_dockerfiles_copy_what_the_build_context_holds(
    service: str, context: Path, dockerfile: Path
) -> None:
    assert context.is_dir() and dockerfile.is_file(), service
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    sent = None
    if ignore.exists():
        rules = [line for line in ignore.read_text().splitlines() if line and line[0] != "#"]
        assert rules[0] == "*", "an allowlist: exclude everything, then name what is sent"
        sent = [rule[1:] for rule in rules if rule.startswith("!")]
        assert all((context / entry).exists() for entry in sent), "stale .dockerignore entry"
    copied = 0
    for keyword, arguments in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(arguments) or []:
            assert (context / source).exists(), f"{service}: COPY {source}: not in {context}"
            if sent is not None:
                assert any(source == e or source.startswith(e + "/") for e in sent), source
            copied += 1
    assert copied or service.endswith("/mlflow")


def pins(text: str) -> dict[str, str]:
    """Exact pins ``name==version`` in a Dockerfile or a requirement list."""
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([0-9][^"]*)"', text))


def test_the_centre_and_the_sites_run_the_same_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = pins(" ".join(f'"{item}"' for item in project["dependencies"]))
    centre = (CENTRE / "airflow.Dockerfile").read_text()
    site = (SITE / "edge-worker.Dockerfile").read_text()
    mlflow = (CENTRE / "mlflow.Dockerfile").read_text()
    airflow = required["apache-airflow"]
    assert f"FROM apache/airflow:{airflow}-python3.11" in centre
    for text in (centre, site):
        assert pins(text)["apache-airflow"] == airflow
        assert pins(text)["torch"] == required["torch"]
    assert pins(centre)["apache-airflow-providers-edge3"] == "5.1.0"
    assert pins(site)["apache-airflow-providers-edge3"] == "5.1.0"
    assert pins(mlflow)["mlflow"] == required["mlflow"]
    assert "FROM python:3.11" in site and "FROM python:3.11" in mlflow


def test_the_centre_and_the_sites_agree_on_paths() -> None:
    centre = dockerfile_env(CENTRE / "airflow.Dockerfile")
    site = dockerfile_env(SITE / "edge-worker.Dockerfile")
    for name in ("AIRFLOW__CORE__DAGS_FOLDER", "FEDMAP_FEDERATIONS_DIR", "FEDMAP_CODE_VERSION"):
        assert centre[name] == site[name], name
    for dockerfile in (CENTRE / "airflow.Dockerfile", SITE / "edge-worker.Dockerfile"):
        assert f"dags {centre['AIRFLOW__CORE__DAGS_FOLDER']}" in dockerfile.read_text()
    # the DAG hands each task the federation file's path at the centre: the site mounts the
    # same folder at the same place
    for path in COMPOSE_FILES:
        for name, service in services(path).items():
            if "airflow" in name or name == "edge-worker":
                targets = {target: source for source, target, _ in mounts(service)}
                assert targets[centre["FEDMAP_FEDERATIONS_DIR"]] == "./federations", name


# --- how tasks reach the sites ---------------------------------------------------------------------


def test_site_tasks_go_to_the_edge_workers() -> None:
    settings = load(CENTRE / "airflow_local_settings.py")
    executors = environment(services(CENTRE / "compose.yaml")["airflow-scheduler"])
    names = executors["AIRFLOW__CORE__EXECUTOR"].split(",")
    assert names[0] == "LocalExecutor"  # the default: the centre's own tasks
    assert [name.rsplit(".", 1)[-1] for name in names[1:]] == [settings.SITE_EXECUTOR]
    site_task = SimpleNamespace(queue="cleveland", executor=None)
    centre_task = SimpleNamespace(queue=settings.CENTRE_QUEUE, executor=None)
    chosen = SimpleNamespace(queue="cleveland", executor="LocalExecutor")
    for task in (site_task, centre_task, chosen):
        settings.task_policy(task)
    assert site_task.executor == "EdgeExecutor"
    assert centre_task.executor is None
    assert chosen.executor == "LocalExecutor"
    copy = "infra/centre/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py"
    assert copy in (CENTRE / "airflow.Dockerfile").read_text()


def test_the_centre_keeps_its_credentials_in_the_scheduler() -> None:
    holders = {
        name
        for name, service in services(CENTRE / "compose.yaml").items()
        if any(key.startswith("AIRFLOW_CONN_") for key in environment(service))
    }
    assert holders == {"airflow-scheduler"}  # not the API server, which answers the sites


def test_the_scheduler_can_set_a_runs_note_through_the_api() -> None:
    """summarise sets each run's note through fedmap_airflow (dags/fedmap_federation.py): the
    API server by its service name, with the admin's credentials (FAB: POST /auth/token)."""
    found = services(CENTRE / "compose.yaml")
    scheduler = environment(found["airflow-scheduler"])
    connection = json.loads(scheduler["AIRFLOW_CONN_FEDMAP_AIRFLOW"])
    assert connection["host"] == "http://airflow-api:8080" and "airflow-api" in found
    assert (connection["login"], connection["password"]) == (
        "${AIRFLOW_ADMIN_USER}",
        "${AIRFLOW_ADMIN_PASSWORD}",
    )
    example = (CENTRE / ".env.example").read_text()
    assert "AIRFLOW_ADMIN_USER=" in example and "AIRFLOW_ADMIN_PASSWORD=" in example


def test_the_site_worker_opens_no_port_and_reads_its_data_read_only() -> None:
    found = services(SITE / "compose.yaml")
    assert list(found) == ["edge-worker"]
    worker = found["edge-worker"]
    assert "ports" not in worker and "expose" not in worker
    assert worker.get("network_mode") != "host"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    read_only = {target: ro for _, target, ro in mounts(worker)}
    assert read_only["/secure/fedmap/${FEDMAP_SITE}"] and read_only["/opt/fedmap/federations"]
    assert not read_only["/var/lib/fedmap"]
    assert env_files(worker) == ["site.env"]
    entrypoint = dict(instructions(SITE / "edge-worker.Dockerfile"))["ENTRYPOINT"]
    assert "airflow edge worker --queues" in entrypoint and "--edge-hostname" in entrypoint


# --- the federation file -------------------------------------------------------------------------


def test_the_federation_example_loads_and_fits_the_site_bundle() -> None:
    shape = schema.read_federation(EXAMPLE)
    config = load_federation(EXAMPLE)
    assert {site.tier for site in shape.sites} == {1, 2, 3}
    worker = services(SITE / "compose.yaml")["edge-worker"]
    targets = {target for _, target, _ in mounts(worker)}
    for site in shape.sites:
        assert site.queue != "default", f"{site.name}'s tasks would run at the centre"
        assert str(site.data) in {t.replace("${FEDMAP_SITE}", site.name) for t in targets}
        if site.tier == 3:
            assert str(site.output) in {t.replace("${FEDMAP_SITE}", site.name) for t in targets}
    assert str(config.state_dir) in targets
    # each side defines the connections the file names, under the names Airflow looks up
    scheduler = environment(services(CENTRE / "compose.yaml")["airflow-scheduler"])
    for connection in (shape.require_storage().connection, shape.mlflow.connection):
        assert connection
        assert f"AIRFLOW_CONN_{connection.upper()}" in scheduler
        assert f"AIRFLOW_CONN_{connection.upper()}" in environment(worker)
    # the bucket MinIO creates and the centre's key may use is the federation's
    init = (CENTRE / "minio" / "init.sh").read_text()
    assert f"centre/{config.storage.bucket} " in init
    centre_policy = (CENTRE / "minio" / "centre-policy.json").read_text()
    assert f"arn:aws:s3:::{config.storage.bucket}/*" in centre_policy
    mlflow = services(CENTRE / "compose.yaml")["mlflow"]["command"]
    artifacts = mlflow[mlflow.index("--artifacts-destination") + 1]
    assert artifacts.startswith("s3://mlflow/") and "centre/mlflow" in init


# --- MinIO policies ------------------------------------------------------------------------------


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


POLICIES = sorted(path for path in INFRA.rglob("*.json") if "Statement" in path.read_text())


@pytest.mark.parametrize("path", POLICIES, ids=lambda path: path.name)
def test_policies_are_iam_documents_without_wildcard_grants(path: Path) -> None:
    check_policy(json.loads(path.read_text()))


def check_policy(document: dict[str, Any]) -> None:
    assert document["Version"] == "2012-10-17"
    assert isinstance(document["Statement"], list) and document["Statement"]
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        actions, resources = listed(statement["Action"]), listed(statement["Resource"])
        assert actions and resources
        assert all(action.startswith("s3:") for action in actions)
        assert all(resource.startswith("arn:aws:s3:::") for resource in resources)
        assert all("[" not in resource for resource in resources)  # fnmatch below stays exact
        if statement["Effect"] == "Allow":
            assert not any("*" in action for action in actions), actions
            for resource in resources:
                bucket = resource.removeprefix("arn:aws:s3:::").split("/", 1)[0]
                assert bucket and "*" not in bucket and "?" not in bucket, resource
        assert set(statement.get("Condition", {})) <= {"StringLike"}


def allows(
    document: dict[str, Any],
    action: str,
    key: str | None = None,
    prefix: str | None = None,
    bucket: str = "fedmap",
) -> bool:
    """IAM evaluation: an explicit Deny wins, else any matching Allow (``*`` spans ``/``)."""
    resource = f"arn:aws:s3:::{bucket}" + ("" if key is None else f"/{key}")
    allowed = False
    for statement in document["Statement"]:
        if action not in listed(statement["Action"]):
            continue
        if not any(fnmatchcase(resource, pattern) for pattern in listed(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {}).get("StringLike", {})
        if any(
            prefix is None or not any(fnmatchcase(prefix, p) for p in listed(patterns))
            for patterns in conditions.values()
        ):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def test_a_site_writes_only_its_own_messages_and_reads_only_priors() -> None:
    policy = POLICY.site_policy("fedmap", ["heart"], "a")
    check_policy(policy)
    keys, other = Keys("heart", RUN), Keys("heart-2", RUN)
    own = [*keys.update(1, "a"), *keys.update(12, "a")]
    own += [keys.validation("a"), keys.evaluation("a"), keys.inference("a")]
    for key in own:
        assert allows(policy, "s3:PutObject", key), key
        assert allows(policy, "s3:GetObject", key), key  # a retried task reads what it committed
    not_own = [*keys.update(1, "b"), *keys.update(1, "a.b"), *keys.update(1, "a-1")]
    not_own += [keys.validation("a.b"), keys.evaluation("b"), keys.inference("ab")]
    not_own += [*keys.prior(1), *keys.prior(2), keys.summary(1), *other.update(1, "a")]
    not_own += [other.validation("a"), *Keys("other", RUN).update(1, "a")]
    for key in not_own:
        assert not allows(policy, "s3:PutObject", key), key
    assert not allows(policy, "s3:PutObject", keys.validation("a"), bucket="fedmap-2")

    for key in [*keys.prior(1), *keys.prior(6)]:
        assert allows(policy, "s3:GetObject", key), key
    unreadable = [*keys.update(1, "b"), *keys.update(1, "a.b"), keys.summary(1)]
    unreadable += [keys.validation("b"), keys.evaluation("b"), *other.prior(1)]
    for key in unreadable:
        assert not allows(policy, "s3:GetObject", key), key
    # sites never list, nor look at the bucket itself: only the centre does
    for prefix in (None, "", "heart/", keys.updates(1), f"{keys.updates(1)}a."):
        assert not allows(policy, "s3:ListBucket", prefix=prefix), prefix
    for action in (
        "s3:HeadBucket",
        "s3:DeleteObject",
        "s3:CreateBucket",
        "s3:PutBucketPolicy",
        "s3:ListAllMyBuckets",
    ):
        assert not allows(policy, action) and not any(allows(policy, action, key) for key in own)


def test_site_1_and_site_10_never_match_each_others_keys() -> None:
    keys = Keys("heart", RUN)
    one, ten = (POLICY.site_policy("fedmap", ["heart"], s) for s in ("site-1", "site-10"))
    for mine, theirs, policy in (("site-1", "site-10", one), ("site-10", "site-1", ten)):
        for key in [*keys.update(3, theirs), keys.validation(theirs), keys.evaluation(theirs)]:
            assert not allows(policy, "s3:PutObject", key), (mine, key)
            assert not allows(policy, "s3:GetObject", key), (mine, key)
        assert allows(policy, "s3:PutObject", keys.update(3, mine)[1])


def test_a_site_named_prior_is_refused() -> None:
    """Its ``updates/prior.json`` would match every site's ``round-*/prior.json`` read pattern
    (``*`` spans ``/``), so the other sites could read its update."""
    reader = POLICY.site_policy("fedmap", ["heart"], "a")
    assert allows(reader, "s3:GetObject", Keys("heart", RUN).update(1, "prior")[1])
    with pytest.raises(POLICY.PolicyError, match="reserved"):
        POLICY.site_policy("fedmap", ["heart"], "prior")


def test_one_policy_covers_every_federation_of_a_site() -> None:
    one = POLICY.site_policy("fedmap", ["heart"], "a")
    both = POLICY.site_policy("fedmap", ["heart", "tcga"], "a")
    check_policy(both)
    assert [s["Sid"] for s in both["Statement"]] == [s["Sid"] for s in one["Statement"]]
    for federation in ("heart", "tcga"):
        keys = Keys(federation, RUN)
        assert allows(both, "s3:PutObject", keys.update(2, "a")[0])
        assert allows(both, "s3:GetObject", keys.prior(2)[0])
        assert not allows(both, "s3:GetObject", keys.update(2, "b")[0])
    assert not allows(both, "s3:PutObject", Keys("other", RUN).validation("a"))
    with pytest.raises(POLICY.PolicyError, match="at least one federation"):
        POLICY.site_policy("fedmap", [], "a")


@pytest.mark.parametrize(
    ("bucket", "federation", "site"),
    [
        ("fedmap", "heart", "*"),
        ("fedmap", "heart", "a/b"),
        ("fedmap", "heart", "a?"),
        ("fedmap", "*", "a"),
        ("fedmap", "heart", "${aws:username}"),
        ("fedmap", "heart", ""),
        ("Fedmap", "heart", "a"),
        ("fed*", "heart", "a"),
    ],
)
def test_names_that_would_widen_a_policy_are_refused(
    bucket: str, federation: str, site: str
) -> None:
    with pytest.raises(POLICY.PolicyError, match="not a valid name"):
        POLICY.site_policy(bucket, [federation], site)


def test_policy_names_follow_the_federation_file() -> None:
    assert POLICY.NAME.pattern == schema.NAME.pattern


def test_the_policy_command_prints_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--bucket", "fedmap", "--federation", "heart", "--federation", "tcga", "--site", "a"]
    assert POLICY.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == POLICY.site_policy(
        "fedmap", ["heart", "tcga"], "a"
    )
    assert POLICY.main(["--bucket", "fedmap", "--federation", "heart", "--site", "a*"]) == 2
    assert "not a valid name" in capsys.readouterr().err
