"""Data contracts: does a site's own folder hold what the federation's task expects?

A contract is a Great Expectations suite committed as JSON in ``expectations/`` plus how the site's
files are read (:class:`Contract`). :func:`validate_site` checks each file of a site folder and
returns a :class:`ValidationSummary`, the only thing that leaves the site.

Privacy: the summary holds, per expectation, success and the *number* of offending rows, never a
row value. GX runs with result format BASIC and ``partial_unexpected_count`` 0, so it builds no
value lists, and only ``unexpected_count`` and ``unexpected_percent_total`` (or
``unexpected_percent``) are copied from each GX result; ``observed_value`` and exception messages
are never read. Error messages are built from those counts, the file name, the column name and the
suite's own parameters. A column name read from the file is quoted only when the first line looks
like a header (it names at least one contract column); otherwise it could be a row's values.

Great Expectations (3 s to import) and pandas are imported inside the functions that use them,
so importing this module costs neither: a site's train task imports it for
:class:`DataContractError` and never loads GX (it checks digests, ``site_tasks.site.digests``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from fedmap.schema import SUITES, meta_fedmap, missing_folder
from site_tasks.site.versioning import dvc_dir_hash, file_sha256

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

EXPECTATIONS = SUITES
# Counts only: BASIC without the 20-value sample that GX would otherwise put in the result.
RESULT_FORMAT: Mapping[str, Any] = MappingProxyType(
    {"result_format": "BASIC", "partial_unexpected_count": 0}
)
NUMERIC_DTYPES = frozenset({"int64", "float64"})
COLUMNS_RULE = "expect_table_columns_to_match_ordered_list"
ROWS_RULE = "expect_table_row_count_to_be_between"
TYPE_RULE = "expect_column_values_to_be_in_type_list"


@dataclass(frozen=True)
class Contract:
    """How a site folder is read for one contract; the rules themselves live in the suite."""

    name: str
    suite_path: Path
    label: str  # the target column
    extra_targets: tuple[str, ...] = ()
    """Further target columns a tier-3 file leaves out too (a survival task's time)."""
    files: tuple[str, ...] = ("train.csv", "val.csv")
    na_values: tuple[str, ...] = ()  # read as missing, on top of pandas' defaults ("", "NA", ...)
    scoring: bool = False
    """Tier 3: files hold features only; rules on the target and on row counts are dropped."""


SCORING_FILES = ("reference.csv", "score.csv")


def scoring_contract(contract: str | Path | Contract) -> Contract:
    """The contract as a tier-3 site applies it: ``reference.csv`` and ``score.csv`` hold the
    feature columns in the contract's order, without the target."""
    return replace(contract_named(contract), files=SCORING_FILES, scoring=True)


@dataclass(frozen=True)
class ExpectationResult:
    """One rule on one file: whether it held and how many rows broke it (never which values)."""

    file: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None


@dataclass(frozen=True)
class ValidationSummary:
    """What a site reports about its data: counts per rule, row counts, readable errors."""

    site: str
    contract: str
    success: bool
    rows: Mapping[str, int]
    results: tuple[ExpectationResult, ...]
    errors: tuple[str, ...]
    sha256: Mapping[str, str] = field(default_factory=dict)
    """A SHA-256 per file that exists, so a registered model names the data it saw and later
    tasks of the run can tell the files are the ones validated (``site_tasks.site.digests``).
    A digest of a whole file reveals no row."""
    data_version: str = ""
    """The DVC hash of the site's folder (``<md5>.dir``, as in dvc.lock or a .dvc file)."""

    def to_json(self) -> str:
        body = {
            "site": self.site,
            "contract": self.contract,
            "success": self.success,
            "rows": dict(self.rows),
            "results": [asdict(r) for r in self.results],
            "errors": list(self.errors),
            "sha256": dict(self.sha256),
            "data_version": self.data_version,
        }
        return json.dumps(body, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ValidationSummary:
        body = json.loads(text)
        return cls(
            site=str(body["site"]),
            contract=str(body["contract"]),
            success=bool(body["success"]),
            rows={str(k): int(v) for k, v in body["rows"].items()},
            results=tuple(ExpectationResult(**r) for r in body["results"]),
            errors=tuple(str(e) for e in body["errors"]),
            sha256={str(k): str(v) for k, v in body.get("sha256", {}).items()},
            data_version=str(body.get("data_version", "")),
        )


class DataContractError(ValueError):
    """A site's data does not meet its contract."""


def require_valid(summary: ValidationSummary) -> None:
    """Raise :class:`DataContractError` listing every error unless the summary succeeded."""
    if not summary.success:
        lines = "\n  ".join(summary.errors)
        raise DataContractError(
            f"{summary.site}: data does not meet the {summary.contract!r} contract:\n  {lines}"
        )


@dataclass(frozen=True)
class _Rules:
    """A loaded suite and what the reader needs from it."""

    suite: ExpectationSuite
    columns: tuple[str, ...]  # the ordered column list, empty if the suite names none
    numeric: frozenset[str]  # columns whose type rule allows numbers only
    order: Mapping[tuple[str, str | None], int]  # (rule, column) -> position in the suite


@cache
def _quiet_gx() -> None:
    """Import GX without its noise: about 150 INFO lines and two DeprecationWarnings at import,
    metric failures logged at ERROR later (their messages could quote data). A site's task log
    may be shipped to the coordinating centre, so GX gets no say in it."""
    # Stop GX's records at its root logger: some GX modules set their own level to INFO, so a
    # level on "great_expectations" alone would not hold them back.
    gx_log = logging.getLogger("great_expectations")
    gx_log.setLevel(logging.CRITICAL)
    gx_log.addHandler(logging.NullHandler())
    gx_log.propagate = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations  # noqa: F401


def _without_target(body: dict[str, Any], targets: tuple[str, ...]) -> dict[str, Any]:
    """The suite minus every rule on the target column(s) and the row-count rule (a clinic may
    score a handful of patients); the ordered column list loses the targets."""
    kept = []
    for expectation in body.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        if kwargs.get("column") in targets or expectation.get("type") == ROWS_RULE:
            continue
        if expectation.get("type") == COLUMNS_RULE:
            columns = [c for c in kwargs["column_list"] if c not in targets]
            expectation = {**expectation, "kwargs": {**kwargs, "column_list": columns}}
        kept.append(expectation)
    return {**body, "name": f"{body.get('name', 'suite')}-scoring", "expectations": kept}


@cache
def _rules(path: Path, without: tuple[str, ...] = ()) -> _Rules:
    """The suite at path; ``without`` names the target columns to leave out (tier-3 files)."""
    _quiet_gx()
    import great_expectations as gx

    with path.open() as f:
        body = json.load(f)
    suite = gx.ExpectationSuite(**(_without_target(body, without) if without else body))
    columns: tuple[str, ...] = ()
    numeric: set[str] = set()
    order: dict[tuple[str, str | None], int] = {}
    for i, expectation in enumerate(suite.expectations):
        config = expectation.configuration
        kwargs = config.kwargs
        order.setdefault((config.type, kwargs.get("column")), i)
        if config.type == COLUMNS_RULE:
            columns = tuple(kwargs["column_list"])
        if config.type == TYPE_RULE and set(kwargs["type_list"]) <= NUMERIC_DTYPES:
            numeric.add(kwargs["column"])
    return _Rules(suite, columns, frozenset(numeric), MappingProxyType(order))


@cache
def _batch_definition() -> BatchDefinition[Any]:
    """One ephemeral GX context per process, without progress bars."""
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("site")
    return source.add_dataframe_asset("file").add_batch_definition_whole_dataframe("whole file")


def feature_columns(contract: str | Path | Contract) -> tuple[str, ...]:
    """The contract's ordered columns without its target, read from the suite's JSON (no GX)."""
    spec = contract_named(contract)
    targets = (spec.label, *spec.extra_targets)
    return tuple(c for c in suite_columns(spec.suite_path) if c not in targets)


def suite_columns(path: Path) -> tuple[str, ...]:
    """The suite's ordered column list, targets included; empty if it names none."""
    for expectation in _suite_json(path).get("expectations", []):
        if expectation.get("type") == COLUMNS_RULE:
            return tuple(expectation["kwargs"]["column_list"])
    return ()


def known_suites() -> tuple[str, ...]:
    """The suites committed in ``expectations/``, by name."""
    return tuple(sorted(p.stem for p in EXPECTATIONS.glob("*.json")))


def suite_path(contract: str | Path) -> Path:
    """A suite by name (``expectations/<name>.json``) or by path; a ValueError names both forms
    when there is no such file."""
    path = Path(contract) if isinstance(contract, Path) else None
    if path is None:
        path = (
            Path(contract) if str(contract).endswith(".json") else EXPECTATIONS / f"{contract}.json"
        )
    if not path.is_file():
        raise ValueError(
            f"unknown data contract {str(contract)!r}: no suite at {path}; give the name of a "
            f"suite in {EXPECTATIONS} ({', '.join(known_suites())}) or a path to a suite JSON"
        )
    return path


def _suite_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable suite JSON ({type(exc).__name__})") from exc
    if not isinstance(body, dict):
        raise ValueError(f"{path}: a suite JSON must hold an object")
    return body


@dataclass(frozen=True)
class SuiteMeta:
    """What a suite's ``meta.fedmap`` says of the files it checks, when it stands alone (no
    federation file): the target column, a survival task's time column, the missing tokens."""

    target: str | None = None
    time: str | None = None
    missing: tuple[str, ...] | None = None


def suite_meta(path: Path) -> SuiteMeta:
    body = _suite_json(path)  # its own errors name the path
    try:
        own = meta_fedmap(body)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    missing = own.get("missing")
    return SuiteMeta(
        None if own.get("target") is None else str(own["target"]),
        None if own.get("time") is None else str(own["time"]),
        None if missing is None else tuple(str(m) for m in missing),
    )


def contract_named(contract: str | Path | Contract) -> Contract:
    """A suite standing alone, by name or path, read as its ``meta.fedmap`` says (a Contract
    passes through): its target, time column and missing tokens. A ValueError when there is no
    such suite or its meta names no target."""
    if isinstance(contract, Contract):
        return contract
    path = suite_path(contract)
    meta = suite_meta(path)
    if meta.target is None:
        raise ValueError(
            f"{path}: the suite's meta.fedmap names no target; give it one, or read the suite "
            "through a federation file, whose task section names the target"
        )
    return Contract(
        path.stem,
        path,
        label=meta.target,
        extra_targets=() if meta.time is None else (meta.time,),
        na_values=meta.missing or (),
    )


def contract_of(
    name: str, path: Path, target: str, time: str | None, missing: Sequence[str]
) -> Contract:
    """The contract a federation file's task gives: its suite and its recipe's target, time column
    and missing tokens. Where the suite's own meta.fedmap states these too, they must agree: a
    ValueError names both."""
    meta = suite_meta(path)
    said = (("target", meta.target, target), ("time", meta.time, time))
    for key, theirs, ours in said:
        if theirs is not None and theirs != ours:
            raise ValueError(
                f"task.{key} is {ours!r}, but the contract's suite {path.name} says {theirs!r} "
                "(meta.fedmap); make them agree"
            )
    if meta.missing is not None and set(meta.missing) != set(missing):
        raise ValueError(
            f"task.missing is {list(missing)}, but the contract's suite {path.name} says "
            f"{list(meta.missing)} (meta.fedmap); make them agree"
        )
    return Contract(
        name,
        path,
        label=target,
        extra_targets=() if time is None else (time,),
        na_values=tuple(missing),
    )


def validate_site(site: str, folder: Path, contract: str | Path | Contract) -> ValidationSummary:
    """Check every file of ``folder`` against the contract. Bad data never raises: it yields
    ``success=False`` and one error per broken rule, naming site, file, column and rule."""
    spec = contract_named(contract)
    if not folder.is_dir():
        message = missing_folder(folder, site)
        result = ExpectationResult("", "folder_exists", None, False, None, None)
        return ValidationSummary(
            site, spec.name, False, MappingProxyType({}), (result,), (message,)
        )
    rules = _rules(spec.suite_path, (spec.label, *spec.extra_targets) if spec.scoring else ())
    rows: dict[str, int] = {}
    results: list[ExpectationResult] = []
    errors: list[str] = []
    digests: dict[str, str] = {}
    for name in spec.files:
        if (folder / name).is_file():
            digests[name] = file_sha256(folder / name)
        checked = _check_file(site, folder / name, spec, rules)
        if checked.rows is not None:
            rows[name] = checked.rows
        results += checked.results
        errors += checked.errors
    return ValidationSummary(
        site,
        spec.name,
        not errors,
        MappingProxyType(rows),
        tuple(results),
        tuple(errors),
        MappingProxyType(digests),
        dvc_dir_hash(folder) if folder.is_dir() else "",
    )


@dataclass(frozen=True)
class _FileCheck:
    rows: int | None
    results: tuple[ExpectationResult, ...]
    errors: tuple[str, ...]


def _failed(site: str, file: str, rule: str, detail: str) -> _FileCheck:
    """A structural failure that stops the file's check before GX runs."""
    result = ExpectationResult(file, rule, None, False, None, None)
    return _FileCheck(None, (result,), (f"{site}: {file}: {rule} failed: {detail}",))


def _check_file(site: str, path: Path, spec: Contract, rules: _Rules) -> _FileCheck:
    import pandas as pd

    file = path.name
    if not path.is_file():
        return _failed(site, file, "file_exists", "no such file in the site folder")
    if path.stat().st_size == 0:
        return _failed(site, file, "file_not_empty", "the file is empty (0 bytes)")
    try:
        # Everything as text first: the contract, not pandas' guesswork, decides what is a number.
        frame = pd.read_csv(path, dtype=str, na_values=list(spec.na_values))
    except pd.errors.EmptyDataError:
        return _failed(site, file, "file_not_empty", "the file holds no header and no rows")
    except (ValueError, UnicodeError, OSError) as exc:  # ParserError is a ValueError
        # The exception's message can quote the file's bytes, so only its type is reported.
        return _failed(site, file, "csv_readable", f"not a readable CSV ({type(exc).__name__})")
    n = len(frame)
    if n == 0:
        check = _failed(site, file, "file_not_empty", "header only, no data rows")
        return _FileCheck(0, check.results, check.errors)
    not_numbers = _to_numbers(frame, rules.numeric)
    try:
        outcome = (
            _batch_definition()
            .get_batch(batch_parameters={"dataframe": frame})
            .validate(rules.suite, result_format=dict(RESULT_FORMAT))
        )
    except Exception as exc:  # a GX failure must not crash the site's task; name its type only
        check = _failed(
            site, file, "gx_validation", f"the suite could not run ({type(exc).__name__})"
        )
        return _FileCheck(n, check.results, check.errors)

    return _interpret(site, file, frame.columns.tolist(), n, not_numbers, outcome.results, rules)


def _interpret(
    site: str,
    file: str,
    present: Sequence[str],
    n: int,
    not_numbers: Mapping[str, int],
    outcome: Sequence[ExpectationValidationResult],
    rules: _Rules,
) -> _FileCheck:
    """GX results -> our results and messages, in suite order, reading only success and counts."""
    missing = {c for c in rules.columns if c not in present}
    results: list[tuple[int, ExpectationResult]] = []
    errors: list[tuple[int, str]] = []
    for gx_result in outcome:
        config = gx_result.expectation_config
        if config is None:  # GX always sets it; the type says it may not
            continue
        kwargs: Mapping[str, Any] = config.kwargs
        column: str | None = kwargs.get("column")
        rank = rules.order.get((config.type, column), len(rules.order))
        count, percent = _counts(gx_result.result)
        success = bool(gx_result.success)
        if config.type == TYPE_RULE and column is not None and not_numbers.get(column, 0):
            success, count, percent = False, not_numbers[column], 100.0 * not_numbers[column] / n
        result = ExpectationResult(file, config.type, column, success, count, percent)
        results.append((rank, result))
        if success:
            continue
        where = f"{site}: {file}: " + (f"column '{column}': " if column else "")
        if config.type == COLUMNS_RULE:
            errors += [
                (rank, e) for e in _column_errors(f"{site}: {file}: ", present, rules.columns)
            ]
        elif column is not None and column not in present:
            if column not in missing:  # otherwise the column rule has said so already
                errors.append((rank, f"{where}{config.type} failed: the column is missing"))
        elif _raised(gx_result.exception_info):
            errors.append((rank, f"{where}{config.type} could not be evaluated"))
        else:
            errors.append((rank, f"{where}{config.type} failed{_detail(result, kwargs, n)}"))
    return _FileCheck(
        n,
        tuple(r for _, r in sorted(results, key=lambda x: x[0])),
        tuple(e for _, e in sorted(errors, key=lambda x: x[0])),
    )


def _to_numbers(frame: pd.DataFrame, numeric: frozenset[str]) -> dict[str, int]:
    """Turn the contract's numeric columns into numbers in place; a cell that is not a number
    becomes missing and is counted, so its column fails the type rule without quoting it."""
    import pandas as pd

    bad: dict[str, int] = {}
    for column in numeric:
        if column not in frame.columns:
            continue
        text = frame[column]
        numbers = pd.to_numeric(text, errors="coerce")
        bad[column] = int((text.notna() & numbers.isna()).sum())
        frame[column] = numbers
    return bad


def _counts(result: Mapping[str, Any]) -> tuple[int | None, float | None]:
    """The only two fields read from a GX result: how many rows, and what percent of all rows."""
    count = result.get("unexpected_count")
    percent = result.get("unexpected_percent_total", result.get("unexpected_percent"))
    return (
        int(count) if isinstance(count, int | float) else None,
        float(percent) if isinstance(percent, int | float) else None,
    )


def _raised(info: Mapping[str, Any]) -> bool:
    """GX reports exceptions either flat or keyed by metric; look at both shapes."""
    if info.get("raised_exception") is True:
        return True
    return any(isinstance(v, Mapping) and v.get("raised_exception") is True for v in info.values())


def _detail(result: ExpectationResult, kwargs: Mapping[str, Any], rows: int) -> str:
    """The tail of an error message: counts from the result, bounds and sets from the suite."""
    rule = result.expectation
    if rule == ROWS_RULE:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        return f": {rows} rows, the contract requires {bounds}"
    if rule == "expect_column_distinct_values_to_contain_set":
        return f": every value of {list(kwargs['value_set'])} must occur (single-class target)"
    if result.unexpected_count is None:
        return ""
    percent = result.unexpected_percent
    percent = 100.0 * result.unexpected_count / rows if percent is None else percent
    text = f" for {result.unexpected_count} of {rows} rows ({percent:.2f}%)"
    hints = {
        TYPE_RULE: "not a number",
        "expect_column_values_to_be_between": (
            f"allowed range [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
        ),
        "expect_column_values_to_be_in_set": f"allowed values {kwargs.get('value_set')}",
        "expect_column_values_to_match_regex": f"values must match {kwargs.get('regex')!r}",
        "expect_column_values_to_be_unique": "values must be unique",
    }
    return f"{text}: {hints[rule]}" if rule in hints else text


def _column_errors(where: str, present: Sequence[str], expected: Sequence[str]) -> list[str]:
    """Missing, unexpected and out-of-order columns, one message each."""
    rule = COLUMNS_RULE
    header_like = any(c in expected for c in present)
    errors = [
        f"{where}column '{c}': {rule} failed: the column is missing"
        for c in expected
        if c not in present
    ]
    for i, c in enumerate(present):
        if c in expected:
            continue
        name = (
            f"'{c}'" if header_like else f"#{i + 1} (name withheld: the first line is not a header)"
        )
        errors.append(f"{where}column {name}: {rule} failed: unexpected column")
    if not errors:
        errors.append(f"{where}{rule} failed: the columns are not in the contract's order")
    return errors
