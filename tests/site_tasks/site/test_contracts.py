"""Data contracts: good sites pass; each kind of bad data fails with a message that names site,
file, column and rule; no row value ever reaches the summary, an error message or the log."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedmap.data import write_site
from fedmap.synthetic import generate
from site_tasks.local.sources import (
    HEART_DISEASE_CENTRES,
    HEART_DISEASE_COLUMNS,
    heart_disease_sites,
    tcga_brca_sites,
)
from site_tasks.site.contracts import (
    RESULT_FORMAT,
    DataContractError,
    ExpectationResult,
    ValidationSummary,
    contract_named,
    feature_columns,
    known_suites,
    require_valid,
    scoring_contract,
    validate_site,
)
from site_tasks.site.versioning import dvc_dir_hash

HEART = Path(__file__).resolve().parents[3] / "datasets" / "fed_heart_disease"
SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
EXPECTATIONS = Path(__file__).resolve().parents[3] / "expectations"
REPO = Path(__file__).resolve().parents[3]
SITE = "site-01"
TRAIN_ONLY = dataclasses.replace(contract_named("synthetic"), files=("train.csv",))
NUMBER_SENTINEL = "987654.321"
TEXT_SENTINEL = "SENTINEL_XYZ"


# --- helpers -------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def set_cells(path: Path, column: str, values: dict[int, str]) -> None:
    """Overwrite data rows (0-based, header excluded) of one column."""
    rows = read_rows(path)
    j = rows[0].index(column)
    for i, value in values.items():
        rows[i + 1][j] = value
    write_rows(path, rows)


def column_names(contract: str) -> list[str]:
    suite = json.loads(contract_named(contract).suite_path.read_text())
    first = suite["expectations"][0]
    assert first["type"] == "expect_table_columns_to_match_ordered_list"
    return list(first["kwargs"]["column_list"])


def failing(summary: ValidationSummary, *needles: str) -> str:
    """The one error that mentions every needle; the summary must have failed."""
    assert not summary.success
    hits = [e for e in summary.errors if all(n in e for n in needles)]
    assert hits, (needles, summary.errors)
    return hits[0]


@pytest.fixture(scope="module")
def good_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_site(generate("label-skew", 0)[0], tmp_path_factory.mktemp("good"))


@pytest.fixture
def site(good_site: Path, tmp_path: Path) -> Path:
    """A private copy of the good synthetic site, free to damage."""
    return Path(shutil.copytree(good_site, tmp_path / SITE))


# --- the synthetic contract ----------------------------------------------------------------------


def test_good_synthetic_site_passes(good_site: Path) -> None:
    summary = validate_site(SITE, good_site, "synthetic")
    assert summary.success, summary.errors
    assert summary.errors == ()
    assert summary.rows == {"train.csv": 1400, "val.csv": 600}
    rules = len(json.loads(contract_named("synthetic").suite_path.read_text())["expectations"])
    assert len(summary.results) == 2 * rules
    assert all(r.success and r.unexpected_count in (0, None) for r in summary.results)
    require_valid(summary)


def test_missing_file(site: Path) -> None:
    (site / "val.csv").unlink()
    summary = validate_site(SITE, site, "synthetic")
    assert summary.errors == (
        "site-01: val.csv: file_exists failed: no such file in the site folder",
    )
    assert ExpectationResult("val.csv", "file_exists", None, False, None, None) in summary.results
    assert summary.rows == {"train.csv": 1400}


def test_missing_site_folder_does_not_raise(tmp_path: Path) -> None:
    summary = validate_site(SITE, tmp_path / "nowhere", "synthetic")
    assert not summary.success
    assert summary.errors == (f"{SITE}: the site folder {tmp_path / 'nowhere'} does not exist",)
    assert summary.results[0].expectation == "folder_exists"


def test_a_missing_repository_folder_names_the_dvc_stage_that_makes_it() -> None:
    from fedmap.schema import read_federation

    spec = read_federation(REPO / "federations" / "heart_disease.yaml")
    folder = spec.sites[0].data.parent / "no-such-centre"
    summary = validate_site("cleveland", folder, "fed_heart_disease")
    assert summary.errors == (
        f"cleveland: the site folder {folder} does not exist; it is made by "
        "`dvc repro heart_disease_data`",
    )


def test_zero_byte_file(site: Path) -> None:
    (site / "train.csv").write_text("")
    failing(
        validate_site(SITE, site, TRAIN_ONLY), "site-01: train.csv:", "file_not_empty", "0 bytes"
    )


def test_header_only_file(site: Path) -> None:
    path = site / "train.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    summary = validate_site(SITE, site, TRAIN_ONLY)
    failing(summary, "site-01: train.csv:", "file_not_empty", "header only")
    assert summary.rows == {"train.csv": 0}


@pytest.mark.parametrize("damage", ["extra field in a row", "binary bytes"])
def test_unreadable_csv(site: Path, damage: str) -> None:
    path = site / "train.csv"
    if damage == "binary bytes":
        path.write_bytes(b"x00,label\n\xff\xfe\x00\x9c,1\n")
    else:
        lines = path.read_text().splitlines()
        lines[10] += ",1.5"
        path.write_text("\n".join(lines) + "\n")
    error = failing(validate_site(SITE, site, TRAIN_ONLY), "site-01: train.csv:", "csv_readable")
    assert "1.5" not in error


def test_missing_column(site: Path) -> None:
    path = site / "train.csv"
    write_rows(path, [row[:5] + row[6:] for row in read_rows(path)])
    summary = validate_site(SITE, site, TRAIN_ONLY)
    error = failing(summary, "column 'x05'")
    assert error == (
        "site-01: train.csv: column 'x05': "
        "expect_table_columns_to_match_ordered_list failed: the column is missing"
    )
    # the column's own rules cannot run; the column rule has said why, once
    assert [e for e in summary.errors if "x05" in e] == [error]


def test_unexpected_column(site: Path) -> None:
    path = site / "train.csv"
    rows = read_rows(path)
    write_rows(path, [[*row, "extra" if i == 0 else "0.5"] for i, row in enumerate(rows)])
    error = failing(validate_site(SITE, site, TRAIN_ONLY), "column 'extra'", "unexpected column")
    assert error.startswith("site-01: train.csv: column 'extra': expect_table_columns_to_match")


def test_columns_out_of_order(site: Path) -> None:
    path = site / "train.csv"
    write_rows(path, [[row[1], row[0], *row[2:]] for row in read_rows(path)])
    failing(
        validate_site(SITE, site, TRAIN_ONLY),
        "site-01: train.csv:",
        "expect_table_columns_to_match_ordered_list",
        "not in the contract's order",
    )


def test_headerless_file_withholds_column_names(site: Path) -> None:
    """Without a header, the first row becomes the column names: they are values, never quoted."""
    path = site / "train.csv"
    rows = read_rows(path)
    write_rows(path, rows[1:])
    summary = validate_site(SITE, site, TRAIN_ONLY)
    failing(summary, "site-01: train.csv:", "column #1 (name withheld", "unexpected column")
    failing(summary, "column 'x00'", "the column is missing")
    text = summary.to_json()
    for value in rows[1][:-1]:
        assert value not in text


def test_text_in_numeric_column(site: Path) -> None:
    set_cells(site / "train.csv", "x05", {3: "abc"})
    error = failing(
        validate_site(SITE, site, TRAIN_ONLY), "expect_column_values_to_be_in_type_list"
    )
    assert error == (
        "site-01: train.csv: column 'x05': expect_column_values_to_be_in_type_list "
        "failed for 1 of 1400 rows (0.07%): not a number"
    )


def test_nan_in_feature(site: Path) -> None:
    set_cells(site / "train.csv", "x05", {3: "nan", 100: "", 1399: "NA"})
    summary = validate_site(SITE, site, "synthetic")
    assert summary.errors == (
        "site-01: train.csv: column 'x05': "
        "expect_column_values_to_not_be_null failed for 3 of 1400 rows (0.21%)",
    )
    result = next(r for r in summary.results if not r.success)
    assert (result.file, result.column, result.unexpected_count) == ("train.csv", "x05", 3)
    assert result.unexpected_percent == pytest.approx(100 * 3 / 1400)


@pytest.mark.parametrize("value", ["2e7", "-inf"])
def test_value_out_of_range(site: Path, value: str) -> None:
    set_cells(site / "train.csv", "x12", {7: value})
    failing(
        validate_site(SITE, site, TRAIN_ONLY),
        "site-01: train.csv: column 'x12': expect_column_values_to_be_between failed for 1 of 1400",
    )


def test_label_outside_its_set(site: Path) -> None:
    set_cells(site / "train.csv", "label", {0: "2", 1: "-1"})
    failing(
        validate_site(SITE, site, TRAIN_ONLY),
        "site-01: train.csv: column 'label': expect_column_values_to_be_in_set failed for 2 of",
    )


def test_single_class_target(site: Path) -> None:
    path = site / "train.csv"
    set_cells(path, "label", dict.fromkeys(range(1400), "0"))
    error = failing(validate_site(SITE, site, TRAIN_ONLY), "column 'label'", "single-class")
    assert error.startswith(
        "site-01: train.csv: column 'label': expect_column_distinct_values_to_contain_set failed"
    )


def test_too_few_rows(site: Path) -> None:
    path = site / "val.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:11]) + "\n")
    summary = validate_site(SITE, site, "synthetic")
    failing(
        summary,
        "site-01: val.csv: expect_table_row_count_to_be_between failed: 10 rows",
        "at least 20",
    )
    assert summary.rows == {"train.csv": 1400, "val.csv": 10}


def test_require_valid_raises_with_every_error(site: Path) -> None:
    set_cells(site / "train.csv", "x01", {0: ""})
    (site / "val.csv").unlink()
    summary = validate_site(SITE, site, "synthetic")
    assert len(summary.errors) == 2
    with pytest.raises(DataContractError) as caught:
        require_valid(summary)
    assert isinstance(caught.value, ValueError)
    for error in summary.errors:
        assert error in str(caught.value)


def test_summary_json_round_trip(site: Path) -> None:
    set_cells(site / "train.csv", "x02", {0: "", 1: "1e9"})
    summary = validate_site(SITE, site, TRAIN_ONLY)
    text = summary.to_json()
    assert ValidationSummary.from_json(text) == summary
    body = json.loads(text)
    assert set(body) == {
        "site",
        "contract",
        "success",
        "rows",
        "results",
        "errors",
        "sha256",
        "data_version",
    }
    # one SHA-256 per file and the folder's DVC hash, nothing else about the files
    assert body["data_version"] == dvc_dir_hash(site)
    assert set(body["sha256"]) == {"train.csv"}
    assert re.fullmatch(r"[0-9a-f]{64}", body["sha256"]["train.csv"])
    fields = {"file", "expectation", "column", "success", "unexpected_count", "unexpected_percent"}
    assert all(set(r) == fields for r in body["results"])


def test_unknown_contract_is_a_usage_error(good_site: Path) -> None:
    with pytest.raises(ValueError, match="unknown data contract 'nope'"):
        validate_site(SITE, good_site, "nope")


# --- privacy -------------------------------------------------------------------------------------


def _plant_synthetic(folder: Path) -> list[str]:
    set_cells(folder / "train.csv", "label", {4: NUMBER_SENTINEL})
    set_cells(folder / "val.csv", "x07", {2: TEXT_SENTINEL})
    return ["column 'label'", "column 'x07'"]


def _plant_heart(folder: Path) -> list[str]:
    set_cells(folder / "train.csv", "chol", {4: NUMBER_SENTINEL})
    set_cells(folder / "val.csv", "thal", {2: TEXT_SENTINEL})
    return ["column 'chol'", "column 'thal'"]


def _plant_tcga(folder: Path) -> list[str]:
    set_cells(folder / "train.csv", "T", {4: NUMBER_SENTINEL})
    set_cells(folder / "val.csv", "pid", {2: TEXT_SENTINEL})
    set_cells(folder / "val.csv", "age_at_index", {3: TEXT_SENTINEL})
    return ["column 'T'", "column 'pid'", "column 'age_at_index'"]


@pytest.mark.parametrize("contract", ["synthetic", "fed_heart_disease", "fed_tcga_brca"])
def test_no_cell_value_leaves_the_site(
    contract: str,
    site: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    if contract == "synthetic":
        folder, columns = site, _plant_synthetic(site)
    elif contract == "fed_heart_disease":
        folder = heart_disease_sites(HEART, tmp_path / "hd")[0]
        columns = _plant_heart(folder)
    else:
        folder = write_fake_tcga(tmp_path / "region-x")
        columns = _plant_tcga(folder)
    assert NUMBER_SENTINEL in (folder / "train.csv").read_text()
    caplog.set_level(logging.DEBUG)
    summary = validate_site(folder.name, folder, contract)
    for column in columns:
        failing(summary, column)
    out, err = capfd.readouterr()
    leaks = [summary.to_json(), repr(summary), *summary.errors, out, err, caplog.text]
    for needle in (NUMBER_SENTINEL, "987654", TEXT_SENTINEL, "SENTINEL"):
        for text in leaks:
            assert needle not in text
    assert "Calculating Metrics" not in err  # GX's progress bars are off
    assert not [r for r in caplog.records if r.name.startswith("great_expectations")]


def test_result_format_builds_no_value_lists() -> None:
    """What GX itself returns under RESULT_FORMAT: counts, and no sample of unexpected values."""
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, 2.0, 987654.321, None], "p": ["A", "A", TEXT_SENTINEL, "B"]})
    rules = [
        ("expect_column_values_to_not_be_null", {"column": "a"}),
        ("expect_column_values_to_be_between", {"column": "a", "min_value": 0, "max_value": 10}),
        ("expect_column_values_to_be_in_set", {"column": "a", "value_set": [1.0, 2.0]}),
        ("expect_column_values_to_be_unique", {"column": "p"}),
        ("expect_column_values_to_match_regex", {"column": "p", "regex": "^[AB]$"}),
    ]
    suite = gx.ExpectationSuite(
        name="probe", expectations=[{"type": t, "kwargs": kw} for t, kw in rules]
    )
    source = gx.get_context(mode="ephemeral").data_sources.add_pandas("probe")
    batch = source.add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    outcome = batch.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format=dict(RESULT_FORMAT)
    )
    assert not any(r.success for r in outcome.results)
    for r in outcome.results:
        assert r.result["unexpected_count"] >= 1
        assert r.result.get("partial_unexpected_list") in (None, [])
        for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_counts"):
            assert key not in r.result
    dumped = json.dumps(outcome.to_json_dict())  # type: ignore[no-untyped-call]
    assert "987654" not in dumped
    assert TEXT_SENTINEL not in dumped


# --- real data: Fed-Heart-Disease ----------------------------------------------------------------

UCI_MD5 = {
    "cleveland": "2d91a8ff69cfd9616aa47b59d6f843db",
    "hungarian": "22e96bee155b5973568101c93b3705f6",
    "switzerland": "9a87f7577310b3917730d06ba9349e20",
    "va": "4249d03ca7711e84f4444768c9426170",
}
UCI_ROWS = {"cleveland": 303, "hungarian": 294, "switzerland": 123, "va": 200}


@pytest.mark.parametrize("centre", HEART_DISEASE_CENTRES)
def test_heart_disease_centre_file_passes(centre: str, tmp_path: Path) -> None:
    """The whole raw UCI file, given a header: every row, every '?', passes the contract."""
    raw = HEART / f"processed.{centre}.data"
    assert hashlib.md5(raw.read_bytes()).hexdigest() == UCI_MD5[centre]
    folder = tmp_path / centre
    folder.mkdir()
    (folder / "all.csv").write_text(",".join(HEART_DISEASE_COLUMNS) + "\n" + raw.read_text())
    whole = dataclasses.replace(contract_named("fed_heart_disease"), files=("all.csv",))
    summary = validate_site(centre, folder, whole)
    assert summary.success, summary.errors
    assert summary.rows == {"all.csv": UCI_ROWS[centre]}


def test_heart_disease_flamby_sites_pass(tmp_path: Path) -> None:
    folders = heart_disease_sites(HEART, tmp_path)
    assert [f.name for f in folders] == list(HEART_DISEASE_CENTRES)
    sizes = {}
    for folder in folders:
        summary = validate_site(folder.name, folder, "fed_heart_disease")
        assert summary.success, summary.errors
        sizes[folder.name] = (summary.rows["train.csv"], summary.rows["val.csv"])
    assert sizes == {
        "cleveland": (199, 104),
        "hungarian": (172, 89),
        "switzerland": (30, 16),
        "va": (85, 45),
    }
    # Switzerland's train split is all positive: the contract must not ask for both classes.
    num = [row[-1] for row in read_rows(tmp_path / "switzerland" / "train.csv")[1:]]
    assert "0" not in num


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("age", "?", "expect_column_values_to_not_be_null"),
        ("cp", "5", "expect_column_values_to_be_in_set"),
        ("num", "7", "expect_column_values_to_be_in_set"),
        ("trestbps", "-5", "expect_column_values_to_be_between"),
    ],
)
def test_heart_disease_rejects(column: str, value: str, rule: str, tmp_path: Path) -> None:
    folder = heart_disease_sites(HEART, tmp_path)[1]
    set_cells(folder / "val.csv", column, {0: value})
    summary = validate_site(folder.name, folder, "fed_heart_disease")
    failing(summary, f"hungarian: val.csv: column '{column}': {rule} failed for 1 of 89 rows")


# --- Fed-TCGA-BRCA: a synthetic stand-in here, the real regions when ../shared is present ---------


def write_fake_tcga(folder: Path, n_train: int = 30, n_val: int = 12, seed: int = 0) -> Path:
    """Rows shaped like brca.csv (same header), with made-up values and made-up barcodes."""
    rng = np.random.default_rng(seed)
    header = column_names("fed_tcga_brca")
    folder.mkdir(parents=True)
    start = 0
    for name, n in (("train.csv", n_train), ("val.csv", n_val)):
        rows = [header]
        for i in range(start, start + n):
            onehot = [str(v) for v in rng.integers(0, 2, len(header) - 4)]
            event, days = float(i % 4 == 0), float(rng.integers(0, 4000))
            age = str(rng.integers(30, 90))
            rows.append([f"TCGA-ZZ-{i:04d}", age, *onehot, str(event), str(days)])
        write_rows(folder / name, rows)
        start += n
    return folder


def test_tcga_stand_in_passes(tmp_path: Path) -> None:
    folder = write_fake_tcga(tmp_path / "region-x")
    summary = validate_site("region-x", folder, "fed_tcga_brca")
    assert summary.success, summary.errors
    assert summary.rows == {"train.csv": 30, "val.csv": 12}


def test_tcga_scoring_files_hold_neither_event_nor_time(tmp_path: Path) -> None:
    """A tier-3 survival site has no outcome: its files lose both targets, E and T."""
    folder = write_fake_tcga(tmp_path / "fake")
    header = column_names("fed_tcga_brca")
    features = [c for c in header if c not in ("E", "T")]
    assert feature_columns("fed_tcga_brca") == tuple(features)
    clinic = tmp_path / "clinic"
    clinic.mkdir()
    with (folder / "train.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    keep = [header.index(c) for c in features]
    for name in ("reference.csv", "score.csv"):
        write_rows(clinic / name, [[row[j] for j in keep] for row in rows])
    summary = validate_site("clinic", clinic, scoring_contract("fed_tcga_brca"))
    assert summary.success, summary.errors


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("E", "2.0", "expect_column_values_to_be_in_set"),
        ("T", "-1.0", "expect_column_values_to_be_between"),
        ("pid", "TCGA-ZZ-0001", "expect_column_values_to_be_unique"),
        ("pid", "patient 7", "expect_column_values_to_match_regex"),
        ("race_white", "7", "expect_column_values_to_be_in_set"),
    ],
)
def test_tcga_rejects(column: str, value: str, rule: str, tmp_path: Path) -> None:
    folder = write_fake_tcga(tmp_path / "region-x")
    set_cells(folder / "train.csv", column, {0: value})
    train_only = dataclasses.replace(contract_named("fed_tcga_brca"), files=("train.csv",))
    summary = validate_site("region-x", folder, train_only)
    error = failing(summary, f"region-x: train.csv: column '{column}': {rule} failed for")
    assert value not in error


@pytest.mark.skipif(
    not (SHARED / "fed_tcga_brca" / "brca.csv").is_file(), reason="../shared/data is absent"
)
def test_tcga_real_regions_pass(tmp_path: Path) -> None:
    folders = tcga_brca_sites(SHARED / "fed_tcga_brca", tmp_path)
    sizes = []
    for folder in folders:
        summary = validate_site(folder.name, folder, "fed_tcga_brca")
        assert summary.success, summary.errors
        sizes.append((summary.rows["train.csv"], summary.rows["val.csv"]))
    assert sizes == [(248, 63), (156, 40), (164, 42), (129, 33), (129, 33), (40, 11)]


# --- the committed suites and the module itself --------------------------------------------------


def test_every_committed_suite_is_a_contract() -> None:
    import great_expectations as gx

    assert set(known_suites()) >= {"synthetic", "fed_heart_disease", "fed_tcga_brca"}
    for name in known_suites():
        contract = contract_named(name)  # each stands alone: its meta.fedmap names the target
        assert contract.suite_path.parent == EXPECTATIONS
        suite = gx.ExpectationSuite(**json.loads(contract.suite_path.read_text()))
        assert suite.name == name
        columns = column_names(name)
        assert contract.label in columns
        typed = {
            e.configuration.kwargs["column"]
            for e in suite.expectations
            if e.expectation_type == "expect_column_values_to_be_in_type_list"
        }
        assert typed == set(columns) - {"pid"}


def test_importing_contracts_is_cheap() -> None:
    code = (
        "import sys, site_tasks.site.contracts, site_tasks.local.sources; "
        "bad = {'great_expectations', 'pandas'} & set(sys.modules); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
