"""Tier 3: a site scores its own new rows with a released prior, against the real local S3 server.

Standardisation is fit on ``reference.csv`` only, predictions stay in the site's output folder in a
file named after model and version, and only counts (the validation and scoring summaries) leave
the site. Every test passes an explicit :class:`Release`, so no MLflow server is needed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from numpy.typing import NDArray

from fedmap.config import ConfigError
from fedmap.data import (
    Standardiser,
    feature_names,
    read_site,
    write_features,
)
from fedmap.models import build_model, predict_proba
from fedmap.params import Params
from fedmap.tabular import TabularTask, read_features_only
from site_tasks.centre.registry import Release
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.site.contracts import (
    ROWS_RULE,
    SCORING_FILES,
    DataContractError,
    ValidationSummary,
    contract_named,
    feature_columns,
    scoring_contract,
    validate_site,
)
from site_tasks.site.score import (
    MIN_REFERENCE_ROWS,
    ScoringSummary,
    output_folder,
    score_site,
    write_predictions,
)
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store

SITE = "site-03"
N_TRAIN, N_VAL = 60, 25
MODEL, VERSION = "fedmap-x-prior", "7"
PREDICTIONS = f"predictions_{MODEL}_v{VERSION}.csv"
HEADER = "row,probability,prediction,model,version"
TEXT_SENTINEL = "NOT_A_NUMBER_SENTINEL_4711"


# --- helpers -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tier3:
    config: FederationConfig
    store: S3Store
    folder: Path  # the tier-3 site's data folder
    reference: NDArray[np.float64]
    score: NDArray[np.float64]


def tier3(make_federation: Callable[..., Path], output: str | None = None) -> Tier3:
    """Three synthetic sites, site-03 rewritten to tier 3 with reference.csv (its train features)
    and score.csv (its val features); a fresh bucket."""
    path = make_federation(n_sites=3, n_train=N_TRAIN, n_val=N_VAL)
    body = yaml.safe_load(path.read_text())
    body["sites"][SITE]["tier"] = 3
    if output is not None:
        body["sites"][SITE]["output"] = output
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    config = load_federation(path)
    folder = config.site(SITE).data
    split = read_site(folder)
    write_features(folder / "reference.csv", split.x_train)
    write_features(folder / "score.csv", split.x_val)
    store = S3Store(config.storage)
    store.ensure_bucket()
    return Tier3(config, store, folder, split.x_train, split.x_val)


def release() -> Release:
    """A fixed MLP (seed 0) whose head is scaled up so the probabilities spread around 0.5."""
    torch.manual_seed(0)
    params: Params = {k: v.detach().clone() for k, v in build_model("mlp", 30).state_dict().items()}
    params["head.weight"] = params["head.weight"] * 40.0
    return Release(name=MODEL, version=VERSION, params=params)


def expected_proba(
    rel: Release, reference: NDArray[np.float64], rows: NDArray[np.float64]
) -> NDArray[np.float64]:
    model = build_model("mlp", 30)
    model.load_state_dict(rel.params, strict=True)
    x = torch.as_tensor(Standardiser.fit(reference)(rows), dtype=torch.float32)
    return predict_proba(model, x).numpy().astype(np.float64)


def default_output(t: Tier3) -> Path:
    return t.config.state_dir / "predictions" / t.config.name / SITE


def read_predictions(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def probabilities(path: Path) -> NDArray[np.float64]:
    _, rows = read_predictions(path)
    return np.array([float(r[1]) for r in rows])


def cells(path: Path) -> set[str]:
    """Every data cell of a CSV file as text, leaving out short ones that could match by chance."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {c for row in rows for c in row if len(c) >= 6}


def assert_nothing_written(t: Tier3, site: str = SITE) -> None:
    folder = output_folder(t.config, site)
    assert not folder.exists() or not list(folder.glob("predictions_*"))
    assert t.store.get(Keys.of(t.config).inference(site)) is None
    assert t.store.list(f"{t.config.name}/{t.config.run}/inference/") == []


def rewrite_cell(path: Path, row: int, column: str, value: str) -> None:
    """Replace one cell (row counted from 1 after the header) of a CSV file."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    rows[row][rows[0].index(column)] = value
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def drop_column(path: Path, column: str) -> None:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    j = rows[0].index(column)
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([r[:j] + r[j + 1 :] for r in rows])


def validate_and_score(
    config: FederationConfig, site: str, store: S3Store, rel: Release
) -> ScoringSummary:
    """A tier-3 site's inference run: its validate task (Great Expectations, once), then its
    score task (which checks the files' digests against the site's own record)."""
    validate(config, site, store)
    return score_site(config, site, store, rel)


# --- the happy path ------------------------------------------------------------------------------


def test_scores_every_row_with_reference_statistics_and_reports_counts_only(
    make_federation: Callable[..., Path],
) -> None:
    t = tier3(make_federation)
    rel = release()
    summary = validate_and_score(t.config, SITE, t.store, rel)

    path = default_output(t) / PREDICTIONS
    assert output_folder(t.config, SITE) == default_output(t)
    assert not (t.folder / "predictions").exists()  # never inside the (read-only) data folder
    assert path.is_file()
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert len(lines) == 1 + N_VAL
    header, rows = read_predictions(path)
    assert header == HEADER.split(",")
    assert [int(r[0]) for r in rows] == list(range(1, N_VAL + 1))
    assert all(r[3] == MODEL and r[4] == VERSION for r in rows)

    got = probabilities(path)
    want = expected_proba(rel, t.reference, t.score)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    predicted = np.array([int(r[2]) for r in rows])
    np.testing.assert_array_equal(predicted, (got >= 0.5).astype(int))
    positives = int((want >= 0.5).sum())
    assert 0 < positives < N_VAL, "the fixture model should predict both classes"
    assert int(predicted.sum()) == positives

    assert summary == ScoringSummary(
        site=SITE,
        model=MODEL,
        version=VERSION,
        rows=N_VAL,
        predicted_positive=positives,
        reference_rows=N_TRAIN,
        predictions_file=PREDICTIONS,
    )

    keys = Keys.of(t.config)
    raw = t.store.get(keys.inference(SITE))
    assert raw is not None
    uploaded = json.loads(raw)
    assert set(uploaded) == {f.name for f in dataclasses.fields(ScoringSummary)} | {"n_scored"}
    assert uploaded == {**dataclasses.asdict(summary), "n_scored": summary.rows}
    assert summary.n_scored == N_VAL and summary.imputed == 0  # no imputation in this recipe
    assert uploaded["rows"] == N_VAL and uploaded["reference_rows"] == N_TRAIN
    assert uploaded["predicted_positive"] == positives
    assert str(t.folder) not in raw.decode()  # the folder is not reported, only the file name

    raw_validation = t.store.get(keys.validation(SITE))
    assert raw_validation is not None
    validation = ValidationSummary.from_json(raw_validation.decode())
    assert validation.success and validation.errors == ()
    assert dict(validation.rows) == {"reference.csv": N_TRAIN, "score.csv": N_VAL}
    assert dict(validation.sha256) == {
        name: hashlib.sha256((t.folder / name).read_bytes()).hexdigest() for name in SCORING_FILES
    }
    assert {r.file for r in validation.results} == set(SCORING_FILES)
    assert all(r.column != "label" and r.expectation != ROWS_RULE for r in validation.results)
    # no feature value leaves the site, neither in the validation nor in the scoring summary
    values = cells(t.folder / "score.csv") | cells(t.folder / "reference.csv")
    assert len(values) > N_VAL * 20
    for blob in (raw_validation.decode(), raw.decode()):
        leaked = [v for v in values if v in blob]
        assert leaked == []
    # only the two summaries were uploaded
    assert t.store.list(f"{t.config.name}/{t.config.run}/") == sorted(
        [keys.inference(SITE), keys.validation(SITE)]
    )


# --- standardisation comes from reference.csv ----------------------------------------------------


def test_statistics_come_from_reference_and_a_row_does_not_depend_on_its_neighbours(
    make_federation: Callable[..., Path],
) -> None:
    t = tier3(make_federation)
    rel = release()
    path = default_output(t) / PREDICTIONS

    validate_and_score(t.config, SITE, t.store, rel)
    first = probabilities(path)

    # a different population in reference.csv: same score rows, other statistics
    shifted = t.reference * 3.0 + 1.5
    write_features(t.folder / "reference.csv", shifted)
    validate_and_score(t.config, SITE, t.store, rel)
    second = probabilities(path)
    np.testing.assert_allclose(second, expected_proba(rel, shifted, t.score), atol=1e-5, rtol=0)
    assert np.abs(first - second).max() > 0.05
    # ... and the score rows' own statistics play no part
    own = expected_proba(rel, t.score, t.score)
    assert np.abs(own - second).max() > 0.05

    # one row alone gets exactly the probability it had inside the full file
    write_features(t.folder / "reference.csv", t.reference)
    validate_and_score(t.config, SITE, t.store, rel)
    _, full = read_predictions(path)
    k = 7
    write_features(t.folder / "score.csv", t.score[k : k + 1])
    summary = validate_and_score(t.config, SITE, t.store, rel)
    assert summary.rows == 1 and summary.reference_rows == N_TRAIN
    _, single = read_predictions(path)
    assert len(single) == 1
    assert single[0][0] == "1"
    assert single[0][1:] == full[k][1:]
    assert summary.predicted_positive == int(full[k][2])


# --- errors --------------------------------------------------------------------------------------


def test_missing_column_in_score_csv_names_site_file_column_and_rule(
    make_federation: Callable[..., Path],
) -> None:
    t = tier3(make_federation)
    drop_column(t.folder / "score.csv", "x05")
    with pytest.raises(DataContractError) as info:
        validate_and_score(t.config, SITE, t.store, release())
    message = str(info.value)
    assert f"{SITE}: score.csv: column 'x05': " in message
    assert "expect_table_columns_to_match_ordered_list failed: the column is missing" in message
    assert "reference.csv" not in message  # reference.csv is fine
    assert_nothing_written(t)
    raw = t.store.get(Keys.of(t.config).validation(SITE))
    assert raw is not None and not ValidationSummary.from_json(raw.decode()).success


def test_a_cell_that_is_not_a_number_names_its_column_but_is_never_quoted(
    make_federation: Callable[..., Path],
) -> None:
    t = tier3(make_federation)
    rewrite_cell(t.folder / "score.csv", 3, "x07", TEXT_SENTINEL)
    with pytest.raises(DataContractError) as info:
        validate_and_score(t.config, SITE, t.store, release())
    message = str(info.value)
    assert f"{SITE}: score.csv: column 'x07': " in message
    assert "expect_column_values_to_be_in_type_list failed for 1 of 25 rows" in message
    assert "not a number" in message
    assert TEXT_SENTINEL not in message
    assert_nothing_written(t)
    raw = t.store.get(Keys.of(t.config).validation(SITE))
    assert raw is not None and TEXT_SENTINEL not in raw.decode()


def test_too_few_reference_rows_is_refused(make_federation: Callable[..., Path]) -> None:
    t = tier3(make_federation)
    write_features(t.folder / "reference.csv", t.reference[: MIN_REFERENCE_ROWS - 1])
    with pytest.raises(DataContractError) as info:
        validate_and_score(t.config, SITE, t.store, release())
    message = str(info.value)
    assert message.startswith(f"{SITE}: reference.csv: {MIN_REFERENCE_ROWS - 1} rows")
    assert f"at least {MIN_REFERENCE_ROWS}" in message
    assert_nothing_written(t)


def test_exactly_min_reference_rows_is_enough(make_federation: Callable[..., Path]) -> None:
    t = tier3(make_federation)
    write_features(t.folder / "reference.csv", t.reference[:MIN_REFERENCE_ROWS])
    summary = validate_and_score(t.config, SITE, t.store, release())
    assert summary.reference_rows == MIN_REFERENCE_ROWS
    np.testing.assert_allclose(
        probabilities(default_output(t) / PREDICTIONS),
        expected_proba(release(), t.reference[:MIN_REFERENCE_ROWS], t.score),
        atol=1e-5,
        rtol=0,
    )


def test_a_tier_1_site_does_not_score(make_federation: Callable[..., Path]) -> None:
    t = tier3(make_federation)
    with pytest.raises(ConfigError, match=r"site-01 is a tier-1 site; only tier-3 sites score"):
        score_site(t.config, "site-01", t.store, release())
    assert_nothing_written(t, "site-01")
    # refused before validating: nothing at all was uploaded
    assert t.store.list(f"{t.config.name}/{t.config.run}/") == []


# --- the output folder ---------------------------------------------------------------------------


def test_output_key_redirects_the_predictions(make_federation: Callable[..., Path]) -> None:
    t = tier3(make_federation, output="site-03-predictions")
    expected_folder = t.config.site(SITE).data.parents[1] / "site-03-predictions"
    assert t.config.site(SITE).output == expected_folder
    assert output_folder(t.config, SITE) == expected_folder
    summary = validate_and_score(t.config, SITE, t.store, release())
    assert summary.predictions_file == PREDICTIONS
    assert sorted(p.name for p in expected_folder.iterdir()) == [PREDICTIONS]
    assert not default_output(t).exists()
    np.testing.assert_allclose(
        probabilities(expected_folder / PREDICTIONS),
        expected_proba(release(), t.reference, t.score),
        atol=1e-5,
        rtol=0,
    )


# --- the scoring contract ------------------------------------------------------------------------


def test_scoring_contract_drops_the_target_and_row_count_rules(tmp_path: Path) -> None:
    contract = scoring_contract("synthetic")
    assert contract.files == SCORING_FILES == ("reference.csv", "score.csv")
    assert contract.scoring and contract.label == "label"
    assert contract.suite_path == contract_named("synthetic").suite_path
    assert not contract_named("synthetic").scoring  # the registered contract is left alone

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 30))
    write_features(tmp_path / "reference.csv", x[:3])  # 3 rows: no row-count rule any more
    with (tmp_path / "score.csv").open("w") as f:  # a training file's layout: features + label
        f.write(",".join([*feature_names(30), "label"]) + "\n")
        for row in x[3:]:
            f.write(",".join(f"{v:.6f}" for v in row) + ",1\n")

    summary = validate_site(SITE, tmp_path, contract)
    assert not summary.success
    assert dict(summary.rows) == {"reference.csv": 3, "score.csv": 2}
    assert summary.errors == (
        f"{SITE}: score.csv: column 'label': "
        "expect_table_columns_to_match_ordered_list failed: unexpected column",
    )
    assert all(r.expectation != ROWS_RULE for r in summary.results)
    assert all(r.column != "label" for r in summary.results)
    assert all(r.success for r in summary.results if r.file == "reference.csv")

    # the same features without the label pass
    write_features(tmp_path / "score.csv", x[3:])
    assert validate_site(SITE, tmp_path, contract).success
    # the training contract would refuse a 3-row, label-less file
    assert not validate_site(SITE, tmp_path, contract_named("synthetic")).success


def test_feature_columns_leave_out_the_target() -> None:
    heart = feature_columns("fed_heart_disease")
    assert len(heart) == 13
    assert "num" not in heart
    assert heart[0] == "age" and heart[-1] == "thal"
    assert feature_columns(scoring_contract("fed_heart_disease")) == heart
    assert feature_columns("synthetic") == tuple(feature_names(30))
    with pytest.raises(ValueError, match="unknown data contract"):
        feature_columns("nope")


# --- idempotence and the file writers ------------------------------------------------------------


def test_rescoring_overwrites_with_identical_bytes(make_federation: Callable[..., Path]) -> None:
    t = tier3(make_federation)
    path = default_output(t) / PREDICTIONS
    first_summary = validate_and_score(t.config, SITE, t.store, release())
    first = path.read_bytes()
    key = Keys.of(t.config).inference(SITE)
    first_upload = t.store.get(key)
    second_summary = validate_and_score(t.config, SITE, t.store, release())
    assert path.read_bytes() == first
    assert second_summary == first_summary
    assert t.store.get(key) == first_upload
    assert sorted(p.name for p in path.parent.iterdir()) == [PREDICTIONS]
    assert not list(t.folder.rglob("*.tmp"))


def test_write_predictions_format_and_threshold(tmp_path: Path) -> None:
    path = tmp_path / "out" / "p.csv"
    write_predictions(path, np.array([0.25, 0.5, 0.4999999, 0.75, 1.0]), "m", "3")
    assert path.read_text() == (
        "row,probability,prediction,model,version\n"
        "1,0.250000,0,m,3\n"
        "2,0.500000,1,m,3\n"
        "3,0.500000,0,m,3\n"  # rounded for display, but below the threshold
        "4,0.750000,1,m,3\n"
        "5,1.000000,1,m,3\n"
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.csv"]


def test_standardiser_uses_its_own_statistics_and_keeps_constant_columns_finite() -> None:
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    scale = Standardiser.fit(x)
    np.testing.assert_allclose(scale.mean, [3.0, 5.0, 5.0])
    np.testing.assert_allclose(scale.std, [np.sqrt(8 / 3), 1.0, np.sqrt(26 / 3)])
    z = scale(x)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, 1], 0.0)
    np.testing.assert_allclose(z[:, [0, 2]].std(axis=0), 1.0)
    # applied to other rows, it uses the fitted statistics, not theirs
    np.testing.assert_allclose(scale(np.array([[3.0, 6.0, 5.0]])), [[0.0, 1.0, 0.0]])


def test_features_round_trip_and_errors_never_quote_a_cell(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)) * 1e3
    path = tmp_path / "f.csv"
    write_features(path, x)
    assert path.read_text().splitlines()[0] == "x00,x01,x02"
    assert not (tmp_path / "f.csv.tmp").exists()
    three, four = ["x00", "x01", "x02"], ["x00", "x01", "x02", "x03"]
    task = TabularTask()  # features only: the target 'label' is not required
    np.testing.assert_allclose(read_features_only(path, task, three), x, rtol=1e-9)

    with pytest.raises(ValueError, match=r"the columns do not give the model's 4 features x00"):
        read_features_only(path, task, four)
    rewrite_cell(path, 2, "x01", TEXT_SENTINEL)
    with pytest.raises(ValueError) as info:
        read_features_only(path, task, three)
    assert str(info.value) == "f.csv: row 3, column 'x01': not a number"
    path.write_text("x00,x01,x02\n1,2\n")
    with pytest.raises(ValueError, match="row 2 has 2 cells, the header 3"):
        read_features_only(path, task, three)
    path.write_text("x00,x01,x02\n1,,2\n")
    with pytest.raises(ValueError, match="column 'x01': missing or infinite value"):
        read_features_only(path, task, three)
    path.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_features_only(path, task, three)


# --- validation and scoring read the same files the same way -------------------------------------


def test_a_heart_disease_site_can_score(
    make_federation: Callable[..., Path], tmp_path: Path
) -> None:
    from site_tasks.local.sources import heart_disease_sites

    heart = Path(__file__).resolve().parents[3] / "datasets" / "fed_heart_disease"
    folders = heart_disease_sites(heart, tmp_path / "heart")
    scorer = folders[0]
    with (scorer / "train.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if "?" not in r]
    j = header.index("num")

    def write(path: Path, table: list[list[str]]) -> None:
        with path.open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([r[:j] + r[j + 1 :] for r in table])

    write(scorer / "reference.csv", [header, *body[:40]])
    write(scorer / "score.csv", [header, *body[40:45]])
    path = make_federation(
        n_sites=1,
        task={
            "contract": "fed_heart_disease",
            "target": "num",
            "missing": ["?"],
            "model": "mlp",
            "n_features": 13,
        },
        sites={
            "site-01": {"data": str(folders[1])},
            "site-03": {"data": str(scorer), "tier": 3},
        },
    )
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    params: Params = {k: v.clone() for k, v in build_model("mlp", 13).state_dict().items()}
    summary = validate_and_score(config, SITE, store, Release(MODEL, VERSION, params))
    assert summary.rows == 5 and summary.reference_rows == 40


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            lambda b: b + b"\n",
            id="trailing-blank-line",
        ),
        pytest.param(
            lambda b: b"\xef\xbb\xbf" + b,
            id="utf8-bom",
        ),
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
    ],
)
def test_a_file_that_passes_validation_can_be_scored(
    make_federation: Callable[..., Path], damage: Callable[[bytes], bytes]
) -> None:
    """Validation and scoring read the same file: scoring never refuses what validation passed."""
    t = tier3(make_federation)
    score = t.folder / "score.csv"
    score.write_bytes(damage(score.read_bytes()))
    try:
        summary = validate_and_score(t.config, SITE, t.store, release())
    except DataContractError as exc:
        raw = t.store.get(Keys.of(t.config).validation(SITE))
        assert raw is not None
        assert not ValidationSummary.from_json(raw.decode()).success, (
            f"validation passed, scoring refused: {exc}"
        )
        assert_nothing_written(t)
    else:
        assert summary.rows == N_VAL
        np.testing.assert_allclose(
            probabilities(default_output(t) / PREDICTIONS),
            expected_proba(release(), t.reference, t.score),
            atol=1e-5,
            rtol=0,
        )


# --- the task recipe: one-hot columns, dropped columns, survival ----------------------------------


def _features_only(source: Path, target: Path, drop: tuple[str, ...], rows: slice) -> None:
    """Write source's header and the chosen data rows to target without the drop columns."""
    with source.open(newline="") as f:
        header, *body = list(csv.reader(f))
    keep = [j for j, c in enumerate(header) if c not in drop]
    with target.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [[r[j] for j in keep] for r in (header, *body[rows])]
        )


def test_a_heart_disease_site_scores_through_the_one_hot_recipe(
    make_federation: Callable[..., Path], tmp_path: Path
) -> None:
    """reference.csv and score.csv become the same 13 features (cp and restecg one-hot, slope, ca
    and thal dropped) as the training sites' rows, standardised on reference.csv."""
    from fedmap.tabular import read_tabular
    from site_tasks.local.sources import heart_disease_sites
    from tests.site_tasks.tabular_data import HEART_SOURCE, federation_task

    folders = {f.name: f for f in heart_disease_sites(HEART_SOURCE, tmp_path / "heart")}
    scorer = folders["cleveland"]
    _features_only(scorer / "train.csv", scorer / "reference.csv", ("num",), slice(0, 60))
    _features_only(scorer / "train.csv", scorer / "score.csv", ("num",), slice(60, 90))
    path = make_federation(
        task=federation_task("heart_disease"),
        sites={
            "hungarian": {"data": str(folders["hungarian"])},
            SITE: {"data": str(scorer), "tier": 3},
        },
    )
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    torch.manual_seed(0)
    params: Params = {k: v * 5.0 for k, v in build_model("logreg", 13).state_dict().items()}
    summary = validate_and_score(config, SITE, store, Release(MODEL, VERSION, params))
    assert summary.rows == 30 and summary.reference_rows == 60

    # the training reader's features of the same rows (the target left in), standardised alike
    rows = read_tabular(scorer / "train.csv", config.recipe)
    assert rows.dropped_missing == 0  # cleveland's first 90 rows have no '?' left to drop
    model = build_model("logreg", 13)
    model.load_state_dict(params)
    x = Standardiser.fit(rows.x[:60])(rows.x[60:90])
    want = predict_proba(model, torch.as_tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(
        probabilities(default_output_of(config) / PREDICTIONS), want, atol=1e-5, rtol=0
    )

    # a missing value in a kept column: the row cannot be scored, and the cell is not quoted
    rewrite_cell(scorer / "score.csv", 4, "trestbps", "?")
    with pytest.raises(DataContractError) as info:
        validate_and_score(config, SITE, store, Release(MODEL, VERSION, params))
    assert str(info.value) == (
        f"{SITE}: score.csv: row 5, column 'trestbps': missing or infinite value; every feature "
        "of a row to score must be a number (or set task.impute)"
    )


def default_output_of(config: FederationConfig) -> Path:
    return config.state_dir / "predictions" / config.name / SITE


def test_a_survival_site_writes_risk_scores_not_probabilities(
    make_federation: Callable[..., Path], tmp_path: Path
) -> None:
    """Survival: the log relative risk of each row (no threshold, no standardisation in the
    TCGA-BRCA recipe); the id column is dropped and neither the event E nor the time T is needed:
    the scoring form of ``fed_tcga_brca`` leaves out both."""
    from fedmap.metrics import predict_output
    from fedmap.tabular import read_tabular
    from tests.site_tasks.tabular_data import federation_task, write_cox_site

    folder = write_cox_site(tmp_path / "region-9", 40, 25, 9)
    _features_only(folder / "train.csv", folder / "reference.csv", ("E", "T"), slice(0, 40))
    _features_only(folder / "val.csv", folder / "score.csv", ("E", "T"), slice(0, 25))
    path = make_federation(
        task=federation_task("tcga_brca"),
        sites={
            "region-0": {"data": str(write_cox_site(tmp_path / "region-0", 40, 20, 0))},
            SITE: {"data": str(folder), "tier": 3},
        },
    )
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    torch.manual_seed(0)
    params: Params = {k: v.clone() for k, v in build_model("logreg", 39).state_dict().items()}
    summary = validate_and_score(config, SITE, store, Release(MODEL, VERSION, params))
    assert summary.rows == 25 and summary.predicted_positive is None

    header, rows = read_predictions(default_output_of(config) / PREDICTIONS)
    assert header == ["row", "risk", "model", "version"]
    model = build_model("logreg", 39)
    model.load_state_dict(params)
    x = torch.as_tensor(read_tabular(folder / "val.csv", config.recipe).x, dtype=torch.float32)
    want = predict_output(model, x, "survival").numpy()
    got = np.array([float(r[1]) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert (got < 0).any() or (got > 1).any()  # a risk score, not a probability
    uploaded = json.loads(store.get(Keys.of(config).inference(SITE)) or b"{}")
    assert uploaded["predicted_positive"] is None and uploaded["rows"] == 25
