"""A first data contract drafted from a site's own CSV files (``site-task contract init``).

The draft is a Great Expectations 1.x suite as a plain dict, the same shape as the committed
suites in ``expectations/`` (``gx.ExpectationSuite(**body)`` loads it), built here with pandas
alone. It runs at the site and sends nothing; it is a starting point for a person to review.

Privacy: the draft holds the header, value sets of low-cardinality columns and ranges widened
beyond what was seen (25% of the span each side, rounded outward to 2 significant digits), so it
reveals neither exact extremes nor rows, but it does describe the site's data: review it before
it is shared. Error messages name the folder, file and column, never a cell value.

Rules per column, in header order (``draft_suite``):

- a column whose every non-missing cell is a finite number: type ``int64``/``float64``;
- not null: strict when nothing was missing, else ``mostly`` = ``floor_2dp(0.8 * f)`` where ``f``
  is the lowest non-missing fraction of any one file (GX checks file by file); none for a column
  missing everywhere, which gets a suite note instead;
- at most 10 distinct values: in set of the sorted values seen; otherwise, if numeric, between
  the widened range;
- the target: strict not null, in set, and distinct values containing {0, 1} when every file
  holds both; the time column (``--time``): numeric, strict not null, at least 0.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from site_tasks.site.contracts import COLUMNS_RULE, ROWS_RULE, TYPE_RULE

MAX_IN_SET = 10  # distinct values up to which a column gets a value set rather than a range
MIN_ROWS = 10  # the row-count floor, lowered to the smallest file's rows if that is fewer
NOT_NULL_RULE = "expect_column_values_to_not_be_null"
IN_SET_RULE = "expect_column_values_to_be_in_set"
BETWEEN_RULE = "expect_column_values_to_be_between"
CONTAINS_RULE = "expect_column_distinct_values_to_contain_set"
UNIQUE_RULE = "expect_column_values_to_be_unique"
REVIEW_WARNING = (
    "The drafted suite holds value sets and widened ranges of this site's data: review it, and "
    "edit what it reveals, before it is shared with the consortium."
)


class DraftError(ValueError):
    """The folder cannot be drafted from (names folder, file or column, never a value)."""


@dataclass(frozen=True)
class ColumnDraft:
    """What was drafted for one column, for the one-line summary the command prints."""

    column: str
    kind: str  # "number", "text" or "empty" (missing in every row)
    missing_percent: float  # over all rows of all files
    rules: tuple[str, ...]  # short names: "number", "not null", "in set", "range", ...

    def line(self) -> str:
        rules = ", ".join(self.rules) or "no rule"
        return f"{self.column}: {self.kind}, {self.missing_percent:.1f}% missing; {rules}"


@dataclass(frozen=True)
class Draft:
    suite: Mapping[str, Any]  # the suite's JSON body
    columns: tuple[ColumnDraft, ...]
    notes: tuple[str, ...]  # also the suite's own ``notes``


def read_csvs(folder: Path, missing: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """Every ``*.csv`` of folder by file name, as text, with ``missing`` and pandas' defaults
    read as NaN. All files must share one header and hold at least one row."""
    if not folder.is_dir():
        raise DraftError(f"{folder}: no such folder")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise DraftError(f"{folder}: no *.csv file in the folder")
    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype=str, na_values=list(missing))
        except pd.errors.EmptyDataError:
            raise DraftError(f"{path}: the file holds no header and no rows") from None
        except (ValueError, UnicodeError, OSError) as exc:
            # The parser's message can quote the file's bytes: name its type only.
            raise DraftError(f"{path}: not a readable CSV ({type(exc).__name__})") from None
        if frame.empty:
            raise DraftError(f"{path}: header only, no data rows")
        first = next(iter(frames.values()), None)
        if first is not None and list(frame.columns) != list(first.columns):
            raise DraftError(
                f"{path}: its header differs from {paths[0].name}'s "
                f"({len(frame.columns)} vs {len(first.columns)} columns); every file must "
                "have the same columns in the same order"
            )
        frames[path.name] = frame
    return frames


def mostly_below(fraction: float) -> float:
    """A ``mostly`` floor under an observed non-missing fraction: 0.8 * fraction, rounded down
    to 2 decimals (0 when the fraction is under 1.25%)."""
    return math.floor(0.8 * fraction * 100) / 100


def _round_sig(x: float, up: bool, digits: int = 2) -> float:
    """x rounded up or down (outward, as the caller asks) to ``digits`` significant digits."""
    if x == 0:
        return 0.0
    exponent = math.floor(math.log10(abs(x))) - digits + 1
    step = 10.0**exponent
    k = math.ceil(x / step) if up else math.floor(x / step)
    return float(round(k * step, -exponent))


def widened_range(low: float, high: float, widen: float = 0.25) -> tuple[float, float]:
    """[low, high] widened by ``widen`` of its span on each side (of the value's size, or 1, when
    the span is 0), rounded outward to 2 significant digits, and kept at or above 0 when low
    is: the bounds say where values lie without giving the extremes away."""
    pad = widen * (high - low) or widen * abs(high) or 1.0
    lower = _round_sig(low - pad, up=False)
    upper = _round_sig(high + pad, up=True)
    return (max(lower, 0.0) if low >= 0 else lower), upper


def _number(x: float) -> int | float:
    """A JSON-friendly number: 3.0 -> 3, 1.5 -> 1.5."""
    return int(x) if float(x).is_integer() else float(x)


def _expectation(rule: str, column: str | None = None, **kwargs: Any) -> dict[str, Any]:
    args = {"column": column, **kwargs} if column is not None else kwargs
    return {"type": rule, "kwargs": args, "meta": {}, "severity": "critical"}


@dataclass(frozen=True)
class _Seen:
    """One column over all files, as the rules need it."""

    numeric: bool
    values: tuple[Any, ...]  # distinct non-missing values, sorted (numbers if numeric)
    present: tuple[float, ...]  # non-missing fraction per file
    per_file: tuple[frozenset[Any], ...]  # distinct values per file
    missing: int
    rows: int
    sizes: tuple[int, ...] = ()  # rows per file


def _see(frames: Sequence[pd.DataFrame], column: str) -> _Seen:
    texts = [frame[column] for frame in frames]
    numbers = [pd.to_numeric(t, errors="coerce") for t in texts]
    numeric = all(
        bool((t.isna() | (n.notna() & n.abs().lt(math.inf))).all())
        for t, n in zip(texts, numbers, strict=True)
    )
    cells = [n.dropna() if numeric else t.dropna() for t, n in zip(texts, numbers, strict=True)]
    per_file = tuple(frozenset(_number(v) if numeric else str(v) for v in c) for c in cells)
    values = tuple(sorted(frozenset().union(*per_file)))
    return _Seen(
        numeric,
        values,
        tuple(len(c) / len(t) for c, t in zip(cells, texts, strict=True)),
        per_file,
        sum(int(t.isna().sum()) for t in texts),
        sum(len(t) for t in texts),
        tuple(len(t) for t in texts),
    )


def _identifier(column: str, seen: _Seen) -> bool:
    """A name ending in "id" (``stay_id``, ``patientunitstayid``), whole numbers, none missing,
    each value once in its file, and more than MAX_IN_SET rows."""
    if not column.lower().endswith("id"):
        return False
    unique = all(
        len(values) == rows for values, rows in zip(seen.per_file, seen.sizes, strict=True)
    )
    whole = all(float(v).is_integer() for v in seen.values)
    return seen.missing == 0 and unique and whole and seen.rows > MAX_IN_SET


def _column_rules(
    column: str, seen: _Seen, role: str | None
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(expectations, short rule names, notes) for one column; role is "target", "time" or None."""
    rules: list[dict[str, Any]] = []
    names: list[str] = []
    notes: list[str] = []
    if not seen.values:
        notes.append(
            f"column '{column}' is missing in every row: no type, null or value rule drafted; "
            "decide its rules"
        )
        if role is not None:
            notes.append(f"the {role} column '{column}' holds no value at all")
        return rules, names, notes
    if seen.numeric or role == "time":
        rules.append(_expectation(TYPE_RULE, column, type_list=["int64", "float64"]))
        names.append("number")
        if not seen.numeric:
            notes.append(
                f"the time column '{column}' holds cells that are not numbers: "
                "the drafted suite fails this data"
            )
    lowest = min(seen.present)
    if lowest == 1.0 or role is not None:
        rules.append(_expectation(NOT_NULL_RULE, column))
        names.append("not null")
        if lowest < 1.0:
            notes.append(
                f"the {role} column '{column}' has missing values; its not-null rule is strict, "
                "so the drafted suite fails this data"
            )
    elif mostly_below(lowest) > 0:
        mostly = mostly_below(lowest)
        rules.append(_expectation(NOT_NULL_RULE, column, mostly=mostly))
        names.append(f"not null (mostly {mostly})")
    else:
        notes.append(f"column '{column}' is missing in nearly every row of a file: no null rule")
    if role == "time":
        rules.append(_expectation(BETWEEN_RULE, column, min_value=0))
        names.append("at least 0")
        if seen.numeric and seen.values[0] < 0:
            notes.append(
                f"the time column '{column}' has negative values: the drafted suite fails this data"
            )
    elif not seen.numeric and role is None:
        # a text column can only be dropped by the recipe (an id, a name): copying its values
        # into a suite that is shared would copy patient data
        notes.append(
            f"column '{column}' holds text: no value set drafted (its values would be copied into "
            "the suite); drop it in the recipe, or add its rule by hand"
        )
    elif len(seen.values) <= MAX_IN_SET:
        rules.append(_expectation(IN_SET_RULE, column, value_set=list(seen.values)))
        names.append(f"in set ({len(seen.values)} values)")
    elif seen.numeric and role is None and _identifier(column, seen):
        rules.append(_expectation(UNIQUE_RULE, column))
        names.append("unique (an identifier: no range)")
        notes.append(
            f"column '{column}' looks like an identifier (whole numbers, unique in every file): "
            "no range drafted, since another site's ids need not fall in this site's; drop it in "
            "the recipe"
        )
    elif seen.numeric:
        low, high = widened_range(float(seen.values[0]), float(seen.values[-1]))
        rules.append(_expectation(BETWEEN_RULE, column, min_value=low, max_value=high))
        names.append("range")
    if role == "target" and len(seen.values) > MAX_IN_SET:
        notes.append(
            f"the target '{column}' has more than {MAX_IN_SET} distinct values: no value set drafted"
        )
    if role == "target" and set(seen.values) == {0, 1}:
        if all(values == {0, 1} for values in seen.per_file):
            rules.append(_expectation(CONTAINS_RULE, column, value_set=[0, 1]))
            names.append("both classes")
        else:
            notes.append(
                f"the target '{column}' is 0/1 but some file holds one class only: "
                "no rule that every file holds both"
            )
    return rules, names, notes


def draft_suite(
    frames: Mapping[str, pd.DataFrame],
    name: str,
    target: str,
    time: str | None = None,
    missing: Sequence[str] = (),
) -> Draft:
    """The suite drafted from ``frames`` (file name -> text frame, as :func:`read_csvs` gives
    them); ``missing`` is only recorded in the suite's ``meta.fedmap``."""
    if not frames:
        raise DraftError("no file to draft from")
    first_name, first = next(iter(frames.items()))
    header = [str(c) for c in first.columns]
    for role, column in (("target", target), ("time", time)):
        if column is not None and column not in header:
            raise DraftError(f"{first_name}: the {role} column '{column}' is not in the header")
    if time == target:
        raise DraftError(f"the target and the time column are both '{target}'")
    rows = min(len(frame) for frame in frames.values())
    expectations = [
        _expectation(COLUMNS_RULE, column_list=header),
        _expectation(ROWS_RULE, min_value=min(MIN_ROWS, rows)),
    ]
    columns: list[ColumnDraft] = []
    notes: list[str] = []
    roles = {target: "target", **({time: "time"} if time is not None else {})}
    for column in header:
        seen = _see(list(frames.values()), column)
        rules, names, column_notes = _column_rules(column, seen, roles.get(column))
        expectations += rules
        notes += column_notes
        kind = "empty" if not seen.values else "number" if seen.numeric else "text"
        columns.append(ColumnDraft(column, kind, 100.0 * seen.missing / seen.rows, tuple(names)))
    suite = {
        "name": name,
        "id": None,
        "expectations": expectations,
        "meta": {
            "fedmap": {"target": target, "time": time, "missing": list(missing)},
            "description": f"Drafted by site-task contract init from {len(frames)} file(s); "
            "review before sharing",
            "great_expectations_version": version("great_expectations"),
        },
        "notes": list(notes) or None,
    }
    return Draft(suite, tuple(columns), tuple(notes))


def draft_folder(
    folder: Path,
    target: str,
    time: str | None = None,
    missing: Sequence[str] = (),
    name: str | None = None,
) -> Draft:
    """:func:`draft_suite` over every CSV of folder; the suite is named after the folder
    unless ``name`` is given."""
    frames = read_csvs(folder, missing)
    return draft_suite(frames, name or folder.resolve().name, target, time, missing)


def write_suite(suite: Mapping[str, Any], path: Path, force: bool = False) -> None:
    """Write the suite as JSON through a temporary file and a rename; an existing file is kept
    (``FileExistsError``) unless ``force``."""
    if path.exists() and not force:
        raise FileExistsError(f"{path}: the file exists (use --force to overwrite it)")
    text = json.dumps(suite, indent=2, allow_nan=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
