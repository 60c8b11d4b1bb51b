"""``site-task contract init``: the drafted suite's rules, that GX loads it, that the folder it was
drafted from passes it and a value outside its widened range does not, and the command's exits."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from site_tasks.cli import main
from site_tasks.site.contracts import Contract, validate_site
from site_tasks.site.draft import (
    DraftError,
    draft_folder,
    mostly_below,
    widened_range,
)

HEADER = ["age", "score", "sex", "cp", "chol", "pid", "unused", "label"]
SECRET = "4242.5"  # a cell value that must never appear in an error message


def _rows(n: int, offset: int) -> list[list[str]]:
    rows = []
    for i in range(n):
        k = i + offset
        rows.append(
            [
                str(30 + k),  # 30..81: numeric, many values, all > 0
                f"{(k - 20) * 0.5:.1f}",  # -10.0..15.5: numeric with negatives
                str(k % 2),  # 0/1
                "abc"[k % 3],  # text, 3 values
                "?" if k % 4 == 0 else str(180 + 3 * k),  # numeric, a quarter missing
                f"p{k:03d}",  # text, one value per row
                "?",  # missing everywhere
                str((k // 2) % 2),  # the target, both classes in every file
            ]
        )
    return rows


def _write(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "hospital-a"
    folder.mkdir()
    _write(folder / "train.csv", _rows(40, 0))
    _write(folder / "val.csv", _rows(12, 40))
    return folder


def _rules(suite: dict[str, Any], column: str | None) -> dict[str, dict[str, Any]]:
    return {
        e["type"].removeprefix("expect_"): e["kwargs"]
        for e in suite["expectations"]
        if e["kwargs"].get("column") == column
    }


def _seen(folder: Path, column: str) -> list[float]:
    values = []
    for name in ("train.csv", "val.csv"):
        with (folder / name).open() as f:
            values += [float(r[column]) for r in csv.DictReader(f) if r[column] != "?"]
    return values


def test_drafted_rules(site: Path) -> None:
    draft = draft_folder(site, "label", missing=("?",))
    suite = dict(draft.suite)
    assert suite["name"] == "hospital-a"
    assert suite["meta"]["fedmap"] == {"target": "label", "time": None, "missing": ["?"]}
    assert "from 2 file(s); review before sharing" in suite["meta"]["description"]
    assert suite["meta"]["great_expectations_version"].startswith("1.")
    table = _rules(suite, None)
    assert table["table_columns_to_match_ordered_list"] == {"column_list": HEADER}
    assert table["table_row_count_to_be_between"] == {"min_value": 10}

    numeric = {"age", "score", "sex", "chol", "label"}
    for column in HEADER:
        typed = "column_values_to_be_in_type_list" in _rules(suite, column)
        assert typed == (column in numeric), column

    # Strict where nothing was missing; mostly below the lowest per-file fraction otherwise.
    assert _rules(suite, "age")["column_values_to_not_be_null"] == {"column": "age"}
    present = min(30 / 40, 9 / 12)  # chol: every 4th row is "?"
    mostly = _rules(suite, "chol")["column_values_to_not_be_null"]["mostly"]
    assert mostly < present
    assert mostly == 0.6

    for column in ("age", "score", "chol"):
        bounds = _rules(suite, column)["column_values_to_be_between"]
        seen = _seen(site, column)
        assert bounds["min_value"] < min(seen) and bounds["max_value"] > max(seen), column
    assert _rules(suite, "age")["column_values_to_be_between"]["min_value"] >= 0
    assert _rules(suite, "score")["column_values_to_be_between"]["min_value"] < -10

    assert _rules(suite, "sex")["column_values_to_be_in_set"]["value_set"] == [0, 1]
    # a text column's values are never copied into the suite, however few
    assert "column_values_to_be_in_set" not in _rules(suite, "cp")
    assert any("column 'cp' holds text: no value set" in n for n in suite["notes"])
    assert _rules(suite, "pid") == {"column_values_to_not_be_null": {"column": "pid"}}
    assert _rules(suite, "unused") == {}
    assert any("'unused' is missing in every row" in note for note in suite["notes"])
    assert _rules(suite, "label") == {
        "column_values_to_be_in_type_list": {"column": "label", "type_list": ["int64", "float64"]},
        "column_values_to_not_be_null": {"column": "label"},
        "column_values_to_be_in_set": {"column": "label", "value_set": [0, 1]},
        "column_distinct_values_to_contain_set": {"column": "label", "value_set": [0, 1]},
    }
    lines = {c.column: c.line() for c in draft.columns}
    assert lines["chol"] == "chol: number, 25.0% missing; number, not null (mostly 0.6), range"
    assert lines["unused"] == "unused: empty, 100.0% missing; no rule"


def test_widened_range_and_mostly() -> None:
    assert widened_range(30, 81) == (17.0, 94.0)  # pad 12.75 each side, outward to 2 digits
    assert widened_range(2, 81) == (0.0, 110.0)  # never below 0 when nothing seen was
    assert widened_range(-10, 15.5) == (-17.0, 22.0)
    assert widened_range(0.0123, 0.0456) == (0.0039, 0.054)
    assert mostly_below(0.75) == 0.6
    assert mostly_below(0.999) == 0.79
    assert mostly_below(0.01) == 0.0


def test_gx_loads_the_suite_and_the_folder_passes_it(site: Path, tmp_path: Path) -> None:
    import great_expectations as gx

    out = tmp_path / "hospital-a.json"
    args = ["--data", str(site), "--target", "label", "--missing", "?", "--out", str(out)]
    assert main(["contract", "init", *args]) == 0
    body = json.loads(out.read_text())
    suite = gx.ExpectationSuite(**body)
    assert len(suite.expectations) == len(body["expectations"])
    assert suite.to_json_dict()["expectations"] == body["expectations"]

    contract = Contract(
        "hospital-a", out, label="label", files=("train.csv", "val.csv"), na_values=("?",)
    )
    summary = validate_site("site-a", site, contract)
    assert summary.success, summary.errors
    assert summary.rows == {"train.csv": 40, "val.csv": 12}

    # A value far outside the widened range of age fails its range rule, naming file and column.
    rows = _rows(12, 40)
    rows[3][0] = "400"
    _write(site / "val.csv", rows)
    summary = validate_site("site-a", site, contract)
    assert not summary.success
    assert summary.errors == (
        "site-a: val.csv: column 'age': expect_column_values_to_be_between failed for 1 of 12 "
        "rows (8.33%): allowed range [17.0, 94.0]",
    )


def test_time_column(tmp_path: Path) -> None:
    folder = tmp_path / "survival"
    folder.mkdir()
    _write(
        folder / "all.csv",
        [[str(40 + i), str(i % 2), str(10 * i + 5)] for i in range(20)],
        ["age", "E", "T"],
    )
    suite = dict(draft_folder(folder, "E", time="T", name="brca").suite)
    assert suite["name"] == "brca"
    assert suite["meta"]["fedmap"] == {"target": "E", "time": "T", "missing": []}
    assert _rules(suite, "T") == {
        "column_values_to_be_in_type_list": {"column": "T", "type_list": ["int64", "float64"]},
        "column_values_to_not_be_null": {"column": "T"},
        "column_values_to_be_between": {"column": "T", "min_value": 0},
    }


def test_cli_writes_once_unless_forced(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["contract", "init", "--data", str(site), "--target", "label", "--missing", "?"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "hospital-a.json"
    assert (tmp_path / "hospital-a.json").is_file()
    assert "  age: number, 0.0% missing; number, not null, range" in err
    assert "WARNING: The drafted suite holds value sets and widened ranges" in err
    assert not list(tmp_path.glob("*.tmp"))

    (tmp_path / "hospital-a.json").write_text("{}")
    assert main(args) == 2
    assert "exists (use --force" in capsys.readouterr().err
    assert (tmp_path / "hospital-a.json").read_text() == "{}"
    assert main([*args, "--force"]) == 0
    assert json.loads((tmp_path / "hospital-a.json").read_text())["name"] == "hospital-a"


def test_cli_errors_exit_2_naming_folder_file_column(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def error(*extra: str) -> str:
        out = tmp_path / "out.json"
        code = main(["contract", "init", "--out", str(out), *extra])
        assert code == 2
        assert not out.exists()
        return capsys.readouterr().err

    rows = _rows(12, 0)
    rows[0][0] = SECRET
    _write(site / "train.csv", rows)
    err = error("--data", str(site), "--target", "outcome")
    assert "train.csv: the target column 'outcome' is not in the header" in err
    assert SECRET not in err
    err = error("--data", str(site), "--target", "label", "--time", "days")
    assert "the time column 'days' is not in the header" in err
    assert error("--data", str(tmp_path / "nope"), "--target", "label").endswith(
        f"{tmp_path / 'nope'}: no such folder\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: no *.csv file" in error("--data", str(empty), "--target", "label")

    _write(site / "val.csv", _rows(12, 0), [*HEADER[:-1], "outcome"])
    err = error("--data", str(site), "--target", "label")
    assert f"{site / 'val.csv'}: its header differs from train.csv's" in err
    assert SECRET not in err

    with pytest.raises(DraftError, match="header only"):
        (site / "val.csv").write_text(",".join(HEADER) + "\n")
        draft_folder(site, "label")
