"""The tabular recipe: FLamby's preprocessing of the real heart-disease and TCGA-BRCA sites, checked
against FLamby's counts and an independent pandas implementation, and errors that name file, row and
column but never a cell."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from numpy.typing import NDArray

from fedmap.schema import Federation, read_federation
from fedmap.tabular import (
    TabularError,
    TabularTask,
    load_tabular_site,
    read_features_only,
    read_tabular,
)
from site_tasks.local.sources import (
    HEART_DISEASE_CENTRES,
    HEART_DISEASE_COLUMNS,
    TCGA_BRCA_SOURCE,
    heart_disease_sites,
    tcga_brca_sites,
)

ROOT = Path(__file__).resolve().parents[2]
HEART = ROOT / "datasets" / "fed_heart_disease"
TCGA = TCGA_BRCA_SOURCE
needs_tcga = pytest.mark.skipif(
    not (TCGA / "brca.csv").is_file(),
    reason=f"TCGA-BRCA is not redistributed here; {TCGA} is absent",
)
HEART_FEATURES = (
    *("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak"),
    *("cp_2", "cp_3", "cp_4", "restecg_1", "restecg_2"),
)
# FLamby's README and SOURCE.md: per centre (train, test) rows and (train, test) positives.
HEART_COUNTS = {
    "cleveland": ((199, 104), (91, 48)),
    "hungarian": ((172, 89), (65, 33)),
    "switzerland": ((30, 16), (30, 15)),
    "va": ((85, 45), (66, 35)),
}
# Raw rows per centre file, and the rows FLamby keeps after its NaN-drop (SOURCE.md).
HEART_RAW = {
    "cleveland": (303, 303),
    "hungarian": (294, 261),
    "switzerland": (123, 46),
    "va": (200, 130),
}
# Per region: (train, test) patients and (train, test) events (SOURCE.md).
TCGA_COUNTS = [
    ((248, 63), (45, 14)),
    ((156, 40), (35, 4)),
    ((164, 42), (14, 8)),
    ((129, 33), (16, 3)),
    ((129, 33), (7, 2)),
    ((40, 11), (2, 1)),
]
FILES = {"train": "train.csv", "test": "val.csv"}


def federation_copy(name: str, folders: list[Path], out: Path) -> Federation:
    """The committed federation file with its site data paths pointed at folders."""
    data = yaml.safe_load((ROOT / "federations" / f"{name}.yaml").read_text())
    by_name = {f.name: f for f in folders}
    assert set(data["sites"]) == set(by_name)
    for site, body in data["sites"].items():
        body["data"] = str(by_name[site])
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return read_federation(path)


@pytest.fixture(scope="module")
def heart(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("heart")
    return federation_copy("heart_disease", heart_disease_sites(HEART, root / "sites"), root)


@pytest.fixture(scope="module")
def tcga(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("tcga")
    return federation_copy("tcga_brca", tcga_brca_sites(TCGA, root / "sites"), root)


def sorted_rows(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return a[np.lexsort(a.T[::-1])]


# --- Fed-Heart-Disease: FLamby's recipe ----------------------------------------------------------


def test_heart_disease_has_flamby_13_features(heart: Federation) -> None:
    recipe = heart.task.recipe
    for site in heart.sites:
        for file in FILES.values():
            split = read_tabular(site.data / file, recipe)
            assert split.columns == HEART_FEATURES
            assert split.x.shape[1] == 13 == heart.task.n_features


def test_heart_disease_counts_match_flamby(heart: Federation) -> None:
    got = {}
    for site in heart.sites:
        data = load_tabular_site(site.data, heart.task.recipe, name=site.name)
        assert data.task == "binary"
        assert set(data.y_train.tolist()) <= {0.0, 1.0}
        got[site.name] = (
            (data.num_train, int(data.y_val.shape[0])),
            (int(data.y_train.sum()), int(data.y_val.sum())),
        )
    assert got == HEART_COUNTS


def test_heart_disease_matches_an_independent_pandas_recipe(heart: Federation) -> None:
    """SOURCE.md's recipe in pandas (read_csv, '?' -> NaN, drop 10-12, dropna, get_dummies over the
    pooled frame with drop_first) joined with flamby_split.csv: the same rows per site and split."""
    frames = []
    for centre in HEART_DISEASE_CENTRES:
        df = pd.read_csv(HEART / f"processed.{centre}.data", header=None)
        df = df.replace("?", np.nan).drop(columns=[10, 11, 12]).dropna(axis=0)
        df = df.apply(pd.to_numeric)
        df["center_name"] = centre
        df["raw_line"] = df.index
        frames.append(df)
    pooled = pd.get_dummies(
        pd.concat(frames, ignore_index=True), columns=[2, 6], drop_first=True, dtype=float
    )
    dummies = ["2_2.0", "2_3.0", "2_4.0", "6_1.0", "6_2.0"]
    assert [c for c in pooled.columns if isinstance(c, str) and c[0] in "26"] == dummies
    split = pd.read_csv(HEART / "flamby_split.csv")
    joined = pooled.merge(split, on=["center_name", "raw_line"], how="inner", validate="1:1")
    assert len(pooled) == len(joined) == len(split) == 740
    label = (joined[13] > 0).astype(float)
    assert (label == joined["label_binary"]).all()
    joined["label"] = label
    columns = [0, 1, 3, 4, 5, 7, 8, 9, *dummies, "label"]
    for site in heart.sites:
        for flamby, file in FILES.items():
            rows = joined[(joined["center_name"] == site.name) & (joined["split"] == flamby)]
            expected = rows[columns].to_numpy(dtype=np.float64)
            ours = read_tabular(site.data / file, heart.task.recipe)
            assert ours.dropped_missing == 0  # the split lists only the rows FLamby keeps
            actual = np.column_stack([ours.x, ours.y])
            assert actual.shape == expected.shape == (len(rows), 14)
            np.testing.assert_allclose(sorted_rows(actual), sorted_rows(expected), rtol=1e-12)


def test_heart_disease_standardised_with_each_sites_training_statistics(
    heart: Federation,
) -> None:
    recipe = heart.task.recipe
    constant = {}
    for site in heart.sites:
        data = load_tabular_site(site.data, recipe, name=site.name)
        raw_train = read_tabular(site.data / "train.csv", recipe).x
        raw_val = read_tabular(site.data / "val.csv", recipe).x
        z = data.x_train.double().numpy()
        np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
        # Population std (ddof=0): FLamby divides by torch's unbiased std (see the report).
        std = raw_train.std(axis=0)
        flat = std == 0
        constant[site.name] = [c for c, f in zip(HEART_FEATURES, flat, strict=True) if f]
        np.testing.assert_allclose(z[:, ~flat].std(axis=0), 1.0, rtol=1e-5)
        assert (z[:, flat] == 0.0).all()
        # validation rows: the training rows' mean and std, not their own
        mean = raw_train.mean(axis=0)
        expected = (raw_val - mean) / np.where(flat, 1.0, std)
        np.testing.assert_allclose(data.x_val.double().numpy(), expected, rtol=1e-5, atol=1e-6)
        assert np.abs(data.x_val.double().numpy().mean(axis=0)).max() > 0.05
    assert constant == {"cleveland": [], "hungarian": [], "switzerland": ["chol"], "va": []}


def test_heart_disease_missing_rows_dropped_as_flamby_does(
    heart: Federation, tmp_path: Path
) -> None:
    """The raw centre files with a header: '?' outside slope, ca and thal drops the row, and the
    rows left are FLamby's 303 / 261 / 46 / 130."""
    header = ",".join(HEART_DISEASE_COLUMNS)
    for centre, (raw, kept) in HEART_RAW.items():
        path = tmp_path / f"{centre}.csv"
        path.write_text(header + "\n" + (HEART / f"processed.{centre}.data").read_text())
        split = read_tabular(path, heart.task.recipe)
        assert (len(split.y), split.dropped_missing) == (kept, raw - kept), centre


# --- Fed-TCGA-BRCA --------------------------------------------------------------------------------


@needs_tcga
def test_tcga_brca_regions(tcga: Federation) -> None:
    with (TCGA / "brca.csv").open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        by_pid = {row[0]: row for row in reader}
    assert header[0] == "pid" and header[-2:] == ["E", "T"]
    recipe = tcga.task.recipe
    assert recipe.type == "survival" and not recipe.standardise
    for k, (site, (sizes, events)) in enumerate(zip(tcga.sites, TCGA_COUNTS, strict=True)):
        assert site.name == f"region-{k}"
        data = load_tabular_site(site.data, recipe, name=site.name)
        assert data.task == "survival"
        assert (data.num_train, int(data.y_val.shape[0])) == sizes
        assert (int(data.y_train[:, 1].sum()), int(data.y_val[:, 1].sum())) == events
        for file, x, y in (
            ("train.csv", data.x_train, data.y_train),
            ("val.csv", data.x_val, data.y_val),
        ):
            split = read_tabular(site.data / file, recipe)
            assert split.columns == tuple(header[1:40])
            assert x.shape[1] == 39 == tcga.task.n_features
            with (site.data / file).open(newline="") as f:
                pids = [row[0] for row in list(csv.reader(f))[1:]]
            raw = np.array([[float(v) for v in by_pid[p][1:]] for p in pids])
            # features as they are (no standardisation); y = (time, event)
            np.testing.assert_allclose(x.double().numpy(), raw[:, :39], rtol=1e-6)
            np.testing.assert_array_equal(y.double().numpy(), raw[:, [40, 39]])
            assert split.y.shape == (len(pids), 2)


# --- the recipe on small files --------------------------------------------------------------------

BINARY = TabularTask(
    target="num",
    positive_above=0,
    drop=("junk",),
    categorical={"cp": (1.0, 2.0, 3.0)},
    missing=("?", "NA"),
    standardise=False,
)
SURVIVAL = TabularTask(type="survival", target="E", time="T", drop=("pid",), standardise=False)
SENTINEL = "987654.321"


def write(path: Path, *rows: str) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def message(exc: pytest.ExceptionInfo[TabularError], path: Path) -> str:
    """The error text without the file name, which may hold digits of its own."""
    text = str(exc.value)
    assert str(path) in text
    return text.replace(str(path), "<file>")


def test_binary_recipe_on_a_small_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.csv",
        "a,cp,junk,b,num",
        "1.5,2,?,10,0",  # '?' in a dropped column: the row stays
        "2.5,1,x,20,3",
        "?,3,x,30,1",  # missing in a kept column: dropped
        "4.5,3,x,,1",  # empty cell: dropped
        "5.5,1,x,50,NA",  # missing target: dropped
        "",  # blank line: ignored
        "6.5,3,x,60,0",
    )
    split = read_tabular(path, BINARY)
    assert split.columns == ("a", "b", "cp_2", "cp_3")
    np.testing.assert_array_equal(split.x, [[1.5, 10, 1, 0], [2.5, 20, 0, 0], [6.5, 60, 0, 1]])
    np.testing.assert_array_equal(split.y, [0, 1, 0])
    assert split.dropped_missing == 3


def test_feature_columns_order_and_level_names() -> None:
    task = TabularTask(categorical={"z": (0.5, 1.0, 2.5), "c": (0.0, 1.0)})
    header = ["z", "x", "label", "c", "w"]
    assert task.feature_columns(header) == ["x", "w", "z_1", "z_2.5", "c_1"]


def test_survival_target_is_time_then_event(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "pid,f,E,T", "p1,0.5,1,100", "p2,1.5,0,250.5")
    split = read_tabular(path, SURVIVAL)
    assert split.columns == ("f",)
    np.testing.assert_array_equal(split.y, [[100.0, 1.0], [250.5, 0.0]])


def test_header_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefflabel,x\n1,2\n0,3\n".encode())
    split = read_tabular(path, TabularTask())
    assert split.columns == ("x",)
    np.testing.assert_array_equal(split.y, [1, 0])


@pytest.mark.parametrize(
    ("task", "rows", "needles"),
    [
        (BINARY, ["a,cp,junk,b", "1,2,x,3"], ["'num'", "missing"]),
        (SURVIVAL, ["pid,f,E", "p,1,0"], ["'T'", "missing"]),
        (
            BINARY,
            ["a,cp,junk,b,num", "1,2,x,3,0", f"1,{SENTINEL},x,3,0"],
            ["row 3", "'cp'", "levels 1, 2, 3"],
        ),
        (
            BINARY,
            ["a,cp,junk,b,num", "1,2,x,3,0", "1,2,x,SENTINEL_XYZ,0"],
            ["row 3", "'b'", "not a number"],
        ),
        (
            SURVIVAL,
            ["pid,f,E,T", "p,1,0,5", f"p,1,{SENTINEL},5"],
            ["row 3", "'E'", "event must be 0 or 1"],
        ),
        (
            SURVIVAL,
            ["pid,f,E,T", "p,1,0,5", f"p,1,1,-{SENTINEL}"],
            ["row 3", "'T'", "time must be >= 0"],
        ),
        (
            TabularTask(),
            ["x,label", "1,0", f"1,{SENTINEL}"],
            ["row 3", "'label'", "must be 0 or 1"],
        ),
        (TabularTask(), ["x,label", "1,0", "1,0,1"], ["row 3", "3 cells", "header 2"]),
    ],
)
def test_errors_name_file_row_and_column_but_no_cell(
    tmp_path: Path, task: TabularTask, rows: list[str], needles: list[str]
) -> None:
    path = write(tmp_path / "train.csv", *rows)
    with pytest.raises(TabularError) as exc:
        read_tabular(path, task)
    text = message(exc, path)
    for needle in needles:
        assert needle in text
    assert SENTINEL not in text and "SENTINEL_XYZ" not in text


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf"])
@pytest.mark.parametrize("column", ["x", "label"])
def test_a_non_finite_cell_never_reaches_the_tensors(
    tmp_path: Path, cell: str, column: str
) -> None:
    """float() accepts 'nan' and 'inf'; such a row must be refused (or dropped as missing, as
    pandas' read_csv + dropna does in FLamby), never passed on to training."""
    rows = {"x": f"{cell},1", "label": f"1,{cell}"}
    path = write(tmp_path / "train.csv", "x,label", "1,0", rows[column])
    task = TabularTask(positive_above=0.5)
    try:
        split = read_tabular(path, task)
    except TabularError as exc:
        assert f"row 3, column {column!r}" in str(exc)
    else:
        assert np.isfinite(split.x).all() and np.isfinite(split.y).all()
        assert split.dropped_missing == 1


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "")
    with pytest.raises(TabularError, match="empty file"):
        read_tabular(path, TabularTask())


def test_a_token_is_missing_only_when_the_task_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "x,label", "NA,1", "2,0", "3,1")
    assert read_tabular(path, TabularTask(missing=("NA",))).dropped_missing == 1
    with pytest.raises(TabularError, match="row 2, column 'x': not a number"):
        read_tabular(path, TabularTask())


def test_load_tabular_site(tmp_path: Path) -> None:
    site = tmp_path / "h1"
    site.mkdir()
    write(site / "train.csv", "x,k,label", "1,5,0", "3,5,1", "?,5,1")
    write(site / "val.csv", "x,k,label", "5,5,1", "1,7,0")
    task = TabularTask(missing=("?",))
    data = load_tabular_site(site, task)
    assert data.name == "h1" and data.task == "binary"
    # mean (2, 5), std (1, 0 -> 1): the constant training column maps to 0, val uses these stats
    np.testing.assert_allclose(data.x_train.numpy(), [[-1, 0], [1, 0]])
    np.testing.assert_allclose(data.x_val.numpy(), [[3, 0], [-1, 2]])
    np.testing.assert_array_equal(data.y_val.numpy(), [1, 0])
    raw = load_tabular_site(site, TabularTask(missing=("?",), standardise=False), name="other")
    assert raw.name == "other"
    np.testing.assert_array_equal(raw.x_val.numpy(), [[5, 5], [1, 7]])


def test_load_tabular_site_errors(tmp_path: Path) -> None:
    site = tmp_path / "h1"
    site.mkdir()
    write(site / "train.csv", "x,label", "1,0", "?,1")
    write(site / "val.csv", "x,label", "5,1")
    with pytest.raises(TabularError, match="h1 has 1 usable rows"):
        load_tabular_site(site, TabularTask(missing=("?",)))
    write(site / "train.csv", "x,label", "1,0", "2,1")
    write(site / "val.csv", "y,label", "5,1")
    with pytest.raises(TabularError, match="different columns"):
        load_tabular_site(site, TabularTask())
    (site / "val.csv").unlink()
    with pytest.raises(FileNotFoundError):
        load_tabular_site(site, TabularTask())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"type": "regression"}, "type must be one of binary, survival"),
        ({"type": "survival", "target": "E"}, "survival task needs time"),
        ({"time": "T"}, "time is only for survival"),
        ({"categorical": {"cp": (1.0,)}}, r"categorical\.cp needs at least two distinct"),
        ({"categorical": {"cp": (1.0, 1.0)}}, r"categorical\.cp needs at least two distinct"),
    ],
)
def test_task_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TabularTask(**kwargs)  # type: ignore[arg-type]


# --- missing values: imputation at the site -------------------------------------------------------

IMPUTED = TabularTask(
    target="died",
    drop=("id",),
    missing=("-1",),
    categorical={"unit": (1.0, 2.0, 3.0)},
    impute="median",
    missing_indicators=("lab",),
)


def test_imputation_keeps_every_row_with_a_target_and_flags_what_was_missing(
    tmp_path: Path,
) -> None:
    site = tmp_path / "icu"
    site.mkdir()
    write(
        site / "train.csv",
        "id,age,lab,unit,died",
        "1,50,2.0,1,0",
        "2,60,-1,2,1",  # lab missing: imputed with the median 3.0, flagged
        "3,,4.0,2,0",  # age missing (empty): imputed with the median 60
        "4,70,3.0,,1",  # unit missing: the most frequent level, 2
        "5,80,9.0,3,",  # the target missing: dropped, however well the inputs are filled
    )
    write(site / "val.csv", "id,age,lab,unit,died", "6,-1,-1,-1,1", "7,40,1.0,1,0")
    train = read_tabular(site / "train.csv", IMPUTED)
    assert train.columns == ("age", "lab", "unit_2", "unit_3", "lab_missing")
    assert (train.dropped_missing, train.imputed, train.rows) == (1, 3, 5)
    np.testing.assert_array_equal(
        train.x,
        [[50, 2, 0, 0, 0], [60, 3, 1, 0, 1], [60, 4, 1, 0, 0], [70, 3, 1, 0, 0]],
    )
    assert train.imputer is not None
    np.testing.assert_array_equal(train.imputer.fill, [60.0, 3.0, 2.0])  # age, lab, unit
    # the validation rows are filled with the training split's values, not their own
    val = read_tabular(site / "val.csv", IMPUTED, train.imputer)
    np.testing.assert_array_equal(val.x, [[60, 3, 1, 0, 1], [40, 1, 0, 0, 0]])
    data = load_tabular_site(site, IMPUTED)
    assert data.num_scored == 2 and data.dropped == (1, 0) and data.imputed == (3, 1)
    # without imputation the same files lose every row with a gap
    dropping = TabularTask(
        target="died", drop=("id",), missing=("-1",), categorical=IMPUTED.categorical
    )
    assert read_tabular(site / "train.csv", dropping).dropped_missing == 4


def test_mean_imputation_and_an_empty_column(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b,label", "1,,0", "2,,1", "6,,1")
    task = TabularTask(impute="mean", missing_indicators=True)
    split = read_tabular(path, task)
    assert split.columns == ("a", "b", "a_missing", "b_missing")
    # b is never present: filled with 0 (standardised to 0 at the site), flagged everywhere
    np.testing.assert_array_equal(split.x, [[1, 0, 0, 1], [2, 0, 0, 1], [6, 0, 0, 1]])
    # ... and stays so where another split has it: the site's statistics know nothing of b
    val = write(tmp_path / "v.csv", "a,b,label", "4,120,0", ",7,1")
    np.testing.assert_array_equal(
        read_tabular(val, task, split.imputer).x, [[4, 0, 0, 1], [3, 0, 1, 1]]
    )
    with pytest.raises(ValueError, match="missing_indicators needs impute"):
        TabularTask(missing_indicators=True)
    typo = TabularTask(impute="median", missing_indicators=("bb",))
    with pytest.raises(TabularError, match="missing_indicators: 'bb' is not an input column"):
        read_tabular(path, typo)


def test_a_tier_3_site_imputes_with_its_reference_rows(tmp_path: Path) -> None:
    from fedmap.tabular import scoring_features

    task = TabularTask(target="died", missing=("-1",), impute="median", missing_indicators=True)
    reference = write(tmp_path / "reference.csv", "age,lab", "50,1", "60,-1", "70,5")
    score = write(tmp_path / "score.csv", "age,lab", "-1,-1", "90,100", "95,200")
    columns = ["age", "lab", "age_missing", "lab_missing"]
    read = scoring_features(reference, score, task, columns)
    # reference.csv's medians (60, 3), never score.csv's own (92.5, 150)
    np.testing.assert_array_equal(read.rows, [[60, 3, 1, 1], [90, 100, 0, 0], [95, 200, 0, 0]])
    assert read.imputed == 1 and read.reference.shape == (3, 4)
    with pytest.raises(ValueError, match="pass its imputer"):  # never score.csv's own medians
        read_features_only(score, task, columns)


def test_a_missing_site_folder_names_the_stage_that_makes_it() -> None:
    """On a fresh clone data/ is empty: the message says which `dvc repro` writes the folder."""
    folder = ROOT / "data" / "fed_heart_disease" / "no-such-centre"
    recipe = read_federation(ROOT / "federations" / "heart_disease.yaml").task.recipe
    with pytest.raises(TabularError) as info:
        load_tabular_site(folder, recipe, name="cleveland")
    assert str(info.value) == (
        f"cleveland: the site folder {folder} does not exist; it is made by "
        "`dvc repro heart_disease_data`"
    )


def test_federated_statistics_pool_counts_sums_and_medians(tmp_path: Path) -> None:
    """statistics: federation: the global fill and scale come from what each site shares of its
    training split (counts, sums, medians; then per-feature sums of squares), never a row."""
    from fedmap.shared_statistics import federated_statistics, weighted_median

    assert weighted_median(np.array([5.0, 1.0, 3.0]), np.array([1.0, 1.0, 5.0])) == 3.0
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write(a / "train.csv", "x,u,label", "1,1,0", "3,1,1", ",2,0")  # median 2 over 2 present
    write(a / "val.csv", "x,u,label", ",1,1")
    write(b / "train.csv", "x,u,label", "10,2,0", "20,2,1", "30,2,1", "40,,0")  # median 25 over 4
    write(b / "val.csv", "x,u,label", "5,,0")
    task = TabularTask(
        categorical={"u": (1.0, 2.0)},
        impute="median",
        missing_indicators=("x",),
        statistics="federation",
    )
    imputer, scale = federated_statistics([a, b], task)
    assert imputer is not None and scale is not None
    # x: the n-weighted median of the medians (2 with n=2, 25 with n=4) is 25; u: level 2 (4 of 6)
    np.testing.assert_array_equal(imputer.fill, [25.0, 2.0])
    site_a = load_tabular_site(a, task, shared=(imputer, scale))
    # a's missing x in val is filled with the global 25, not a's own 2, and scaled globally
    features = np.array(
        [[1, 0, 0], [3, 0, 0], [25, 1, 1], [10, 1, 0], [20, 1, 0], [30, 1, 0], [40, 1, 0]]
    )
    mean, std = features.mean(axis=0), features.std(axis=0)
    np.testing.assert_allclose(
        site_a.x_val.numpy(), [(np.array([25, 0, 1]) - mean) / std], rtol=1e-6
    )
    own = load_tabular_site(a, dataclasses.replace(task, statistics="site"))
    assert not np.allclose(own.x_val.numpy(), site_a.x_val.numpy())
