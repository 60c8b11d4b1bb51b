"""The federation file ``federations/<name>.yaml``, read and checked into frozen dataclasses.

One file drives everything: ``fedmap simulate --federation FILE`` and ``bench/real.py`` (every
site in one process), the DAG factory (sites, tiers, queues, rounds, quorum, schedule, connection
ids) and each Airflow task (``site_tasks.federation`` adds the data contract and builds FedMAP).
This module is the only reader of that file. It needs the standard library and PyYAML alone, so a
DAG file imports it and still parses in well under a second. Every problem is a
:class:`ConfigError` naming the file and the key; an unknown key, at any level, is an error.
Relative paths are taken from the file's own folder. The schema is in ``docs/federation.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import yaml

from fedmap.privacy import Privacy, check_privacy

if TYPE_CHECKING:
    from fedmap.training import LocalTraining

T = TypeVar("T")

Task = Literal["binary", "survival"]
TASKS: tuple[Task, ...] = get_args(Task)
ModelName = Literal["logreg", "mlp", "mlp-bn"]
Impute = Literal["none", "median", "mean"]
IMPUTE: tuple[Impute, ...] = get_args(Impute)
Statistics = Literal["site", "federation"]
STATISTICS: tuple[Statistics, ...] = get_args(Statistics)
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
"""``fedmap.models.build_model``'s names."""
PRIORS = ("gaussian", "diagonal", "icnn")
"""FedMAP's priors (docs/results/priors.md)."""
TIERS = (1, 2, 3)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""A federation, run, site, queue or connection name; ``infra/site/policy.py`` keeps a copy."""
RESERVED_SITES = ("centre", "prior")
"""Names no site may take (``fedmap.signing.CENTRE``; the priors' keys, ``site_tasks.access``)."""
TOP_LEVEL = frozenset(
    {
        "name",
        "run",
        "task",
        "algorithm",
        "sites",
        "min_sites",
        "schedule",
        "storage",
        "mlflow",
        "device",
        "state_dir",
        "bounds",
        "trust",
        "privacy",
    }
)
REQUIRED = ("name", "task", "sites")
SECTIONS = ("task", "algorithm", "storage", "mlflow", "bounds", "trust", "privacy")
SITE_KEYS = frozenset({"data", "tier", "queue", "output"})
TASK_KEYS = ("contract", "model", "n_features")
"""The keys of ``task`` that are not the recipe (:class:`TabularTask`)."""


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names its path."""


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass cls from data, recursing into dataclass-typed fields.

    Keys not declared on cls raise ConfigError naming ``path.key``; missing keys keep defaults.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = ", ".join(f"{path}.{k}" if path else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {where} (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        sub = f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            kwargs[name] = from_mapping(hint, value, sub)
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{sub}: expected a list, got {value!r}")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or '<root>'}: {exc}") from exc


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ConfigError(f"{what} must be 1-63 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TabularTask:
    """The recipe of the ``task`` section (docs/byod.md): how a site's rows become features and a
    target. ``fedmap.tabular`` applies it."""

    type: Task = "binary"
    target: str = "label"
    """binary: the label column; survival: the event column (1 = event observed, 0 = censored)."""
    time: str | None = None
    """survival: the follow-up time column."""
    positive_above: float | None = None
    """binary: label = 1 when target > this value (FLamby's heart disease: num > 0). None: the
    target must already be 0 or 1."""
    drop: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """column -> its levels; one-hot encoded with the first level dropped."""
    missing: tuple[str, ...] = ()
    """Cell values read as missing, besides an empty cell. A row with a missing value in a kept
    column is dropped (FLamby's ``dropna``) and counted."""
    standardise: bool = True
    """z = (x - mean) / std with the site's own training statistics (FLamby: heart yes, TCGA no)."""
    impute: Impute = "none"
    """none: a row with a missing value in a kept column is dropped (FLamby's recipes). median or
    mean: a missing feature is filled with that statistic of the site's own training split (the
    most frequent level for a categorical column), so every row with a target is kept and every
    row to score gets a prediction. A row whose target is missing is always dropped."""
    missing_indicators: bool | tuple[str, ...] = False
    """A 0/1 input ``<column>_missing`` per feature column (true: every kept input column; a
    list: those columns), 1 where the cell was missing before imputation. Needs ``impute``."""
    statistics: Statistics = "site"
    """site: each site imputes and standardises with its own training statistics. federation:
    with global ones pooled from what each site shares of its training split (per column its
    count, sum and median; per feature its count, sum and sum of squares; never a row:
    ``fedmap.shared_statistics``). The simulator runs it; a deployment refuses it for now."""

    def __post_init__(self) -> None:
        if self.type not in TASKS:
            raise ValueError(f"type must be one of {', '.join(TASKS)}, got {self.type!r}")
        if self.type == "survival" and not self.time:
            raise ValueError("a survival task needs time: the follow-up time column")
        if self.type == "binary" and self.time is not None:
            raise ValueError("time is only for survival tasks")
        for column, levels in self.categorical.items():
            if len(levels) < 2 or len(set(levels)) != len(levels):
                raise ValueError(f"categorical.{column} needs at least two distinct levels")
        if self.impute not in IMPUTE:
            raise ValueError(f"impute must be one of {', '.join(IMPUTE)}, got {self.impute!r}")
        if self.statistics not in STATISTICS:
            raise ValueError(
                f"statistics must be one of {', '.join(STATISTICS)}, got {self.statistics!r}"
            )
        if self.missing_indicators not in (True, False) and not (
            isinstance(self.missing_indicators, tuple)
            and all(isinstance(c, str) for c in self.missing_indicators)
        ):
            raise ValueError(
                "missing_indicators must be true, false or a list of column names, got "
                f"{self.missing_indicators!r}"
            )
        if self.missing_indicators and self.impute == "none":
            raise ValueError(
                "missing_indicators needs impute: median or mean (without imputation a row with "
                "a missing value is dropped, so every indicator would be 0)"
            )
        if isinstance(self.missing_indicators, tuple):
            wrong = sorted(set(self.missing_indicators) & {*self.drop, *self.targets})
            if wrong:
                raise ValueError(
                    f"missing_indicators: {', '.join(wrong)} is a dropped or target column"
                )

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if self.time is None else (self.target, self.time)

    def input_columns(self, header: Sequence[str]) -> list[str]:
        """The file's columns the features are made from, in header order: all but the dropped
        and target columns."""
        skipped = {*self.drop, *self.targets}
        return [c for c in header if c not in skipped]

    def indicator_columns(self, header: Sequence[str]) -> list[str]:
        """The input columns that get a ``<column>_missing`` indicator, in header order."""
        inputs = self.input_columns(header)
        if self.missing_indicators is True:
            return inputs
        if not self.missing_indicators:
            return []
        return [c for c in inputs if c in self.missing_indicators]

    def feature_columns(self, header: Sequence[str]) -> list[str]:
        """The model's inputs, in order: the kept numeric columns, then each categorical column's
        indicators ``<column>_<level>`` for every level but the first (get_dummies' order), then
        the missing-value indicators ``<column>_missing``."""
        inputs = self.input_columns(header)
        numeric = [c for c in inputs if c not in self.categorical]
        dummies = [
            f"{c}_{level_name(v)}"
            for c in inputs
            if c in self.categorical
            for v in self.categorical[c][1:]
        ]
        return numeric + dummies + [f"{c}_missing" for c in self.indicator_columns(header)]


def level_name(value: float) -> str:
    """A categorical level as it appears in a column name: ``2`` for 2.0, ``0.5`` for 0.5."""
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class TaskSpec:
    """``task``: the data contract, the model and the recipe.

    ``contract`` is the name of a suite in the repository's ``expectations/`` folder, or a path
    to a suite JSON anywhere (a consortium keeps its contracts in its own repository): a value
    ending in ``.json`` or holding a ``/``, taken from the federation file's folder when
    relative; ``suite`` is then that file. ``n_features`` is the model's input size: None (the
    usual case) means the recipe's count over the contract's columns, computed where the suite
    is read (``site_tasks.federation``) or from the data (the simulator)."""

    contract: str
    model: str = "mlp"
    n_features: int | None = None
    recipe: TabularTask = field(default_factory=TabularTask)
    suite: Path | None = None
    """The suite's path when ``contract`` is a path; None for a suite in ``expectations/``."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """``algorithm``: FedMAP's prior and sigma^2, the rounds, and each site's local step."""

    method: str = "fedmap"
    prior: str = "gaussian"
    variance: float = 1.0
    input_variance: float | None = math.inf
    weighting: str = "omega"
    min_variance: float | None = None
    """Learned priors (diagonal, icnn): the floor of their variance; None: ``variance``, so a
    learned prior is never tighter than the Gaussian one of the same file."""
    rounds: int = 1
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    lr_final: float | None = None
    """None: lr in every round. Else a cosine decay over the rounds, from lr in round 1 to
    lr_final in the last (``fedmap.training.cosine_lr``); a tier-2 site's fine-tuning and the
    local-only baseline replay the same schedule, step t at round t's rate."""
    seed: int = 0

    @property
    def training(self) -> LocalTraining:
        from fedmap.training import LocalTraining  # torch: only where a model is trained

        final = None if self.lr_final is None else float(self.lr_final)
        return LocalTraining(self.epochs, self.batch_size, self.lr, final)

    def fedmap_options(self) -> dict[str, Any]:
        """The options of ``build_algorithm("fedmap", ...)`` this section sets."""
        return {
            "prior": self.prior,
            "variance": float(self.variance),
            "input_variance": None if self.input_variance is None else float(self.input_variance),
            "weighting": self.weighting,
            "min_variance": float(
                self.variance if self.min_variance is None else self.min_variance
            ),
        }


@dataclass(frozen=True)
class Site:
    name: str
    data: Path
    """The site's data folder, on its own machine (resolved against the file's folder)."""
    tier: int = 1
    """1: trains every round and contributes; 2: fine-tunes the final prior locally; 3: inference only."""
    queue: str = "default"
    """The Airflow queue of the site's tasks; a worker at the site listens on it."""
    output: Path | None = None
    """Tier 3: where predictions are written (default ``<state_dir>/predictions/<name>/<site>``)."""


@dataclass(frozen=True)
class Storage:
    """An S3 bucket: AWS when endpoint_url is None, otherwise MinIO or the local server."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    connection: str | None = None
    """An Airflow connection (type aws) the DAG reads into the environment; see docs/federation.md."""


@dataclass(frozen=True)
class Mlflow:
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI; registration is skipped when neither is set."""
    connection: str | None = None
    """An Airflow connection whose host (or URI) is the tracking server."""


@dataclass(frozen=True)
class Bounds:
    """What any one site can do to the prior; docs/security.md gives the reason for each default."""

    max_weight: float = 0.5
    """The largest share w_k any site gets (water-filling, ``fedmap.bounds.cap_weights``): no
    hospital outweighs all the others together, whatever log omega it reports."""
    max_update_norm: float = 100.0
    """||theta_k - mu|| above this and the update is rejected (not clipped: a clipped update would
    still be accepted, and an honest site never comes near it; the round summary records every
    site's norm)."""
    min_log_omega: float = -20.0
    """A mean log-likelihood below -20 nats per example (a likelihood under 2e-9) is a broken or
    lying site, not a poorly fitting one: rejected with the reason rather than silently weighted 0.
    The upper end is 0 (log omega is a log-likelihood minus a penalty)."""


@dataclass(frozen=True)
class Trust:
    keyring: Path | None = None
    """The enrolled public keys (``site-task enrol``); default
    ``<state_dir>/<name>/trust/keyring.json``."""


@dataclass(frozen=True)
class Federation:
    """A whole federation file. ``storage`` is None when the file has none: the simulator needs no
    bucket, a deployment does (:meth:`require_storage`)."""

    path: Path
    name: str
    task: TaskSpec
    algorithm: AlgorithmSpec
    sites: tuple[Site, ...]
    run: str = "manual"
    min_sites: int = 1
    """The quorum: a round needs at least this many accepted updates."""
    schedule: str | None = None
    storage: Storage | None = None
    mlflow: Mlflow = field(default_factory=Mlflow)
    device: str = "auto"
    state_dir: Path = Path(".state/site-state")
    """Where a site keeps its own theta_k between rounds. It never leaves the site."""
    bounds: Bounds = field(default_factory=Bounds)
    trust: Trust = field(default_factory=Trust)
    privacy: Privacy = field(default_factory=Privacy)
    """Client-level DP and secure aggregation (``fedmap.privacy``, docs/privacy.md); off by default."""

    @property
    def keyring(self) -> Path:
        """The federation's keyring of enrolled public keys (``trust.keyring``)."""
        return self.trust.keyring or self.state_dir / self.name / "trust" / "keyring.json"

    @property
    def rounds(self) -> int:
        return self.algorithm.rounds

    def tier(self, *tiers: int) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.tier in tiers)

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        names = ", ".join(s.name for s in self.sites)
        raise ConfigError(f"site {name!r} is not in federation {self.name!r} ({names})")

    def require_storage(self) -> Storage:
        """The bucket, which the DAG and every task need; a ConfigError when the file has none."""
        if self.storage is None:
            raise ConfigError(
                f"{self.path}: missing key 'storage' (the S3 bucket the centre and the sites share)"
            )
        return self.storage


SUITES = Path(__file__).resolve().parents[1] / "expectations"
"""The repository's committed suites, named in a federation file by their file's stem."""
FROM_SUITE = ("target", "time", "missing")
"""The recipe keys a suite's ``meta.fedmap`` supplies when the task section leaves them out."""


def meta_fedmap(body: Any) -> dict[str, Any]:
    """What a suite's ``meta.fedmap`` says, of ``FROM_SUITE`` (target, time, missing), leaving
    out what it does not say; a ValueError when ``meta.fedmap`` is there but not a mapping."""
    meta = body.get("meta") if isinstance(body, Mapping) else None
    own = meta.get("fedmap") if isinstance(meta, Mapping) else None
    if own is None:
        return {}
    if not isinstance(own, Mapping):
        raise ValueError("meta.fedmap must be a mapping")
    return {k: v for k, v in own.items() if k in FROM_SUITE and v is not None}


def suite_says(path: Path) -> Mapping[str, Any]:
    """A suite's ``meta.fedmap`` read as plain JSON without Great Expectations; empty when the
    file is absent or unreadable (the deployment's check, ``site_tasks.federation``, reports
    that suite and why)."""
    try:
        return meta_fedmap(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def is_suite_path(contract: str) -> bool:
    """A contract value names a suite file rather than a suite in ``expectations/``."""
    return contract.endswith(".json") or "/" in contract or "\\" in contract


def dvc_stage_for(folder: Path) -> str | None:
    """The stage of the nearest ``dvc.yaml`` above folder whose outputs hold folder (the
    repository's own site folders come from ``dvc repro <stage>``); None when none does."""
    folder = folder.resolve()
    for root in folder.parents:
        if not (root / "dvc.yaml").is_file():
            continue
        try:
            stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
        except (OSError, yaml.YAMLError, AttributeError):
            return None
        for name, stage in stages.items():
            outs = stage.get("outs", []) if isinstance(stage, Mapping) else []
            for out in outs:
                out = next(iter(out)) if isinstance(out, Mapping) else out
                if isinstance(out, str) and "${" not in out:
                    made = (root / out).resolve()
                    if folder == made or made in folder.parents:
                        return str(name)
        return None
    return None


def missing_folder(folder: Path, what: str) -> str:
    """The message for a site folder that does not exist: it names the folder and, for a folder
    a DVC stage makes, the command that makes it."""
    stage = dvc_stage_for(folder)
    hint = f"; it is made by `dvc repro {stage}`" if stage else ""
    return f"{what}: the site folder {folder} does not exist{hint}"


def task_spec(data: Any, base: Path | None = None) -> TaskSpec:
    """Read the ``task`` section; the recipe keys go to :class:`TabularTask`. A contract given as
    a path is resolved against base (the federation file's folder)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"task must be a mapping, got {data!r}")
    if "contract" not in data:
        raise ConfigError(
            "task.contract is required (a suite in expectations/, or a path to a suite JSON)"
        )
    contract = data["contract"]
    if not isinstance(contract, str) or not contract:
        raise ConfigError(f"task.contract must be a suite name or path, got {contract!r}")
    suite = None
    if is_suite_path(contract):
        suite = (base or Path.cwd()) / contract
        suite = suite.resolve()
        contract = suite.stem
    recipe = {k: v for k, v in data.items() if k not in TASK_KEYS}
    # one place: what the file leaves out of target, time and missing, the suite's meta says
    for key, value in suite_says(suite or SUITES / f"{contract}.json").items():
        recipe.setdefault(key, value)
    if "time" in recipe and "type" not in recipe:
        recipe["type"] = "survival"
    categorical = recipe.get("categorical", {})
    if not isinstance(categorical, Mapping) or not all(
        isinstance(v, list | tuple) for v in categorical.values()
    ):
        raise ConfigError("task.categorical: expected a mapping of column -> list of levels")
    recipe["categorical"] = {str(k): tuple(float(x) for x in v) for k, v in categorical.items()}
    indicators = recipe.get("missing_indicators", False)
    if isinstance(indicators, list):
        recipe["missing_indicators"] = tuple(str(c) for c in indicators)
    elif not isinstance(indicators, bool):
        raise ConfigError(
            f"task.missing_indicators must be true, false or a list of columns, got {indicators!r}"
        )
    spec = TaskSpec(
        contract=contract,
        model=data.get("model", "mlp"),
        n_features=data.get("n_features"),
        recipe=from_mapping(TabularTask, recipe, "task"),
        suite=suite,
    )
    if spec.model not in MODEL_NAMES:
        raise ConfigError(f"task.model must be one of {', '.join(MODEL_NAMES)}, got {spec.model!r}")
    if spec.n_features is not None and (not _is_int(spec.n_features) or spec.n_features < 1):
        raise ConfigError(f"task.n_features must be a positive integer, got {spec.n_features!r}")
    return spec


def algorithm_spec(data: Any) -> AlgorithmSpec:
    """Read the ``algorithm`` section; absent, every default."""
    spec = from_mapping(AlgorithmSpec, data, "algorithm")
    if spec.prior not in PRIORS:
        raise ConfigError(f"algorithm.prior must be one of {', '.join(PRIORS)}, got {spec.prior!r}")
    if not _is_int(spec.seed):
        raise ConfigError(f"algorithm.seed must be an integer, got {spec.seed!r}")
    if not _is_int(spec.rounds) or spec.rounds < 1:
        raise ConfigError(f"algorithm.rounds must be a positive integer, got {spec.rounds!r}")
    # fedmap.training.LocalTraining's rule, checked here without importing torch
    lr_ok = isinstance(spec.lr, int | float) and not isinstance(spec.lr, bool) and spec.lr > 0
    counts_ok = _is_int(spec.epochs) and spec.epochs >= 1
    counts_ok = counts_ok and _is_int(spec.batch_size) and spec.batch_size >= 2
    if not (lr_ok and counts_ok):
        raise ConfigError(
            f"algorithm: invalid local training settings: epochs={spec.epochs!r}, "
            f"batch_size={spec.batch_size!r}, lr={spec.lr!r} (epochs >= 1; batch_size >= 2, since a one-row batch is skipped; lr > 0)"
        )
    final = spec.lr_final
    if final is not None and not (
        isinstance(final, int | float) and not isinstance(final, bool)
        and 0 < final <= spec.lr
    ):  # fmt: skip
        raise ConfigError(
            f"algorithm.lr_final must be a number in (0, lr = {spec.lr!r}], got {final!r} "
            "(leave it out for the same learning rate in every round)"
        )
    return spec


def _folder(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a folder, got {value!r}")
    return (base / value).resolve()


def _site(base: Path, name: Any, spec: Any) -> Site:
    where = f"sites.{name}"
    check_name(name, where)
    if name in RESERVED_SITES:
        raise ConfigError(
            f"{where}: {name!r} cannot name a site ('centre' owns the centre's signing key; "
            "'prior' would match every site's read rule for the priors)"
        )
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where} must be {{data: FOLDER, tier: 1|2|3, queue: NAME, output: FOLDER}}, got {spec!r}"
        )
    unknown = sorted(set(spec) - SITE_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)} "
            f"(known: {', '.join(sorted(SITE_KEYS))})"
        )
    if "data" not in spec:
        raise ConfigError(f"{where}.data is required (the site's data folder)")
    tier = spec.get("tier", 1)
    if not _is_int(tier) or tier not in TIERS:
        raise ConfigError(f"{where}.tier must be 1, 2 or 3, got {tier!r}")
    queue = check_name(spec.get("queue", "default"), f"{where}.queue")
    output = spec.get("output")
    if output is not None and (tier != 3 or not isinstance(output, str)):
        raise ConfigError(f"{where}.output is a folder, and only tier-3 sites write predictions")
    return Site(
        name,
        _folder(base, spec["data"], f"{where}.data"),
        tier,
        queue,
        None if output is None else _folder(base, output, f"{where}.output"),
    )


def _sites(base: Path, data: Any) -> tuple[Site, ...]:
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("sites must map each site name to {data: FOLDER}")
    return tuple(_site(base, name, spec) for name, spec in data.items())


def _storage(data: Mapping[str, Any] | None) -> Storage | None:
    if data is None:
        return None
    if "bucket" not in data:
        raise ConfigError(
            "storage.bucket is required (the S3 bucket the centre and the sites share)"
        )
    storage = from_mapping(Storage, data, "storage")
    if storage.connection is not None:
        check_name(storage.connection, "storage.connection")
    return storage


def _mlflow(data: Mapping[str, Any] | None) -> Mlflow:
    mlflow = from_mapping(Mlflow, data, "mlflow")
    if mlflow.connection is not None:
        check_name(mlflow.connection, "mlflow.connection")
    return mlflow


def _bounds(data: Mapping[str, Any] | None) -> Bounds:
    bounds = from_mapping(Bounds, data, "bounds")
    checks = (
        ("max_weight", 0 < bounds.max_weight <= 1, "in (0, 1]"),
        ("max_update_norm", bounds.max_update_norm > 0, "positive"),
        ("min_log_omega", bounds.min_log_omega < 0, "negative"),
    )
    for key, ok, rule in checks:
        value = getattr(bounds, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok:
            raise ConfigError(f"bounds.{key} must be {rule}, got {value!r}")
    return bounds


def _trust(base: Path, data: Mapping[str, Any] | None) -> Trust:
    trust = from_mapping(Trust, data, "trust")
    if trust.keyring is None:
        return trust
    return Trust(keyring=_folder(base, trust.keyring, "trust.keyring"))


def _privacy(data: Mapping[str, Any] | None, sites: Sequence[Site], algo: AlgorithmSpec) -> Privacy:
    section = from_mapping(Privacy, data, "privacy")
    if isinstance(section.epsilon, str) and section.epsilon.lower() in (".inf", "inf"):
        section = dataclasses.replace(section, epsilon=math.inf)
    try:
        check_privacy(section)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    tier1 = {s.name for s in sites if s.tier == 1}
    for name in section.register_personal:
        if name not in tier1:
            raise ConfigError(
                f"privacy.register_personal: {name!r} is not a tier-1 site ({', '.join(sorted(tier1))})"
            )
    if section.active and algo.weighting != "omega":
        raise ConfigError(
            "privacy: algorithm.weighting samples would send N_k in the clear; under a privacy "
            "section the weights are privacy.weights (omega or equal)"
        )
    if section.active and algo.prior != "gaussian":
        raise ConfigError(
            f"privacy: algorithm.prior {algo.prior!r} fits its state to each site's theta_k, which a "
            "privacy section keeps from the centre; use prior: gaussian (docs/privacy.md)"
        )
    return section


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the federation file: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _federation(path: Path, data: Mapping[str, Any]) -> Federation:
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(TOP_LEVEL))})"
        )
    for key in REQUIRED:
        if key not in data:
            raise ConfigError(f"missing key {key!r}")
    for key in SECTIONS:
        if key in data and not isinstance(data[key], Mapping):
            raise ConfigError(f"{key} must be a mapping, got {data[key]!r}")
    base = path.parent
    sites = _sites(base, data["sites"])
    contributors = sum(s.tier == 1 for s in sites)
    min_sites = data.get("min_sites", 1)
    if not _is_int(min_sites) or not 1 <= min_sites <= max(contributors, 1):
        raise ConfigError(
            f"min_sites must be between 1 and the {contributors} tier-1 sites, got {min_sites!r}"
        )
    schedule = data.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise ConfigError("schedule must be a cron expression or preset such as '@weekly'")
    device = data.get("device", "auto")
    if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}")
    state_dir = data.get("state_dir", ".state/site-state")
    algorithm = algorithm_spec(data.get("algorithm"))
    privacy = _privacy(data.get("privacy"), sites, algorithm)
    if privacy.secure and min_sites < 2:
        raise ConfigError(
            f"privacy.secure_aggregation ckks needs min_sites >= 2, got {min_sites}: the sum of "
            "one site's ciphertext is that site's own update"
        )
    return Federation(
        path=path,
        name=check_name(data["name"], "name"),
        task=task_spec(data["task"], base),
        algorithm=algorithm,
        sites=sites,
        run=check_name(data.get("run", "manual"), "run"),
        min_sites=min_sites,
        schedule=schedule,
        storage=_storage(data.get("storage")),
        mlflow=_mlflow(data.get("mlflow")),
        device=device,
        state_dir=_folder(base, state_dir, "state_dir"),
        bounds=_bounds(data.get("bounds")),
        trust=_trust(base, data.get("trust")),
        privacy=privacy,
    )


def read_federation(path: Path) -> Federation:
    """Read and check the federation file at path; every problem is a ConfigError that names the
    file and the key."""
    data = _read_yaml(path)
    try:
        return _federation(path, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
