"""The shared real datasets as site folders: FLamby's split, the source rows copied verbatim."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from pathlib import Path

import pytest

from site_tasks.local.sources import (
    EICU_APS_FEATURES,
    EICU_COLUMNS,
    EICU_DEMO_SOURCE,
    HEART_DISEASE_CENTRES,
    HEART_DISEASE_COLUMNS,
    TCGA_BRCA_SOURCE,
    eicu_demo_sites,
    eicu_demo_summary,
    heart_disease_sites,
    main,
    tcga_brca_sites,
)

ROOT = Path(__file__).resolve().parents[3]
HEART = ROOT / "datasets" / "fed_heart_disease"
TCGA = TCGA_BRCA_SOURCE
needs_tcga = pytest.mark.skipif(
    not (TCGA / "brca.csv").is_file(),
    reason=f"TCGA-BRCA is not redistributed here; {TCGA} is absent",
)
HEART_SIZES = {
    "cleveland": (199, 104),
    "hungarian": (172, 89),
    "switzerland": (30, 16),
    "va": (85, 45),
}
TCGA_SIZES = [(248, 63), (156, 40), (164, 42), (129, 33), (129, 33), (40, 11)]
EICU = EICU_DEMO_SOURCE
needs_eicu = pytest.mark.skipif(
    not (EICU / "patient.csv.gz").is_file(),
    reason=f"the eICU demo is not redistributed here; {EICU} is absent",
)
EICU_SITES = ("midwest", "south", "west", "northeast", "unknown")
# (train rows, val rows, deaths): SOURCE.md's stays with APACHE aps vars and a label, per region
EICU_SIZES = {
    "midwest": (502, 216, 52),
    "south": (466, 200, 59),
    "west": (321, 137, 44),
    "northeast": (96, 42, 19),
    "unknown": (139, 60, 22),
}


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_heart_disease_sites(tmp_path: Path) -> None:
    folders = heart_disease_sites(HEART, tmp_path)
    assert folders == [tmp_path / c for c in HEART_DISEASE_CENTRES]
    assert HEART_DISEASE_COLUMNS[2] == "cp" and HEART_DISEASE_COLUMNS[-1] == "num"
    split = read(HEART / "flamby_split.csv")
    index = split[0].index
    total = 0
    for folder in folders:
        raw = read(HEART / f"processed.{folder.name}.data")
        assert sorted(p.name for p in folder.iterdir()) == ["train.csv", "val.csv"]
        sizes = []
        for flamby, file in (("train", "train.csv"), ("test", "val.csv")):
            rows = read(folder / file)
            assert rows[0] == list(HEART_DISEASE_COLUMNS)
            # the raw lines FLamby's split lists, in its order, cell for cell ('?' kept)
            lines = [
                int(r[index("raw_line")])
                for r in split[1:]
                if r[index("center_name")] == folder.name and r[index("split")] == flamby
            ]
            assert rows[1:] == [raw[i] for i in lines]
            labels = {
                int(r[index("raw_line")]): r[index("label_binary")]
                for r in split[1:]
                if r[index("center_name")] == folder.name
            }
            assert all(str(int(float(raw[i][13]) > 0)) == labels[i] for i in lines)
            sizes.append(len(rows) - 1)
        assert tuple(sizes) == HEART_SIZES[folder.name]
        total += sum(sizes)
    assert total == 740


def test_hungarian_keeps_question_marks_in_dropped_columns(tmp_path: Path) -> None:
    (folder,) = [f for f in heart_disease_sites(HEART, tmp_path) if f.name == "hungarian"]
    rows = read(folder / "train.csv")[1:]
    assert any(row[10:13] == ["?", "?", "?"] for row in rows)  # slope, ca, thal: FLamby drops them
    assert not any("?" in row[:10] + row[13:] for row in rows)  # the columns FLamby keeps


@needs_tcga
def test_tcga_brca_sites(tmp_path: Path) -> None:
    folders = tcga_brca_sites(TCGA, tmp_path)
    assert folders == [tmp_path / f"region-{k}" for k in range(6)]
    brca = read(TCGA / "brca.csv")
    order = {row[0]: i for i, row in enumerate(brca[1:])}
    fold = {row[0]: row[2] for row in read(TCGA / "train_test_split.csv")[1:]}
    written: list[str] = []
    for k, folder in enumerate(folders):
        for file, name in (("train.csv", f"train_{k}"), ("val.csv", f"test_{k}")):
            rows = read(folder / file)
            assert rows[0] == brca[0] and len(rows[0]) == 42
            pids = [row[0] for row in rows[1:]]
            assert all(fold[p] == name for p in pids)
            assert [order[p] for p in pids] == sorted(order[p] for p in pids)  # brca.csv order
            assert rows[1:] == [brca[1 + order[p]] for p in pids]  # verbatim
            written += pids
        sizes = (len(read(folder / "train.csv")) - 1, len(read(folder / "val.csv")) - 1)
        assert sizes == TCGA_SIZES[k]
    assert len(written) == len(set(written)) == len(fold) == 1088
    # the eight patients of brca.csv (TSS 5L, JL, PL) outside FLamby's split are not written
    left_out = sorted(set(order) - set(written))
    assert len(left_out) == 8
    assert {p.split("-")[1] for p in left_out} == {"5L", "JL", "PL"}


def test_rewriting_is_idempotent_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    first = {p: p.read_bytes() for f in heart_disease_sites(HEART, tmp_path) for p in f.iterdir()}
    second = {p: p.read_bytes() for f in heart_disease_sites(HEART, tmp_path) for p in f.iterdir()}
    assert first == second and len(first) == 8
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("dataset", "source", "sites"),
    [
        ("fed_heart_disease", HEART, HEART_DISEASE_CENTRES),
        pytest.param("fed_tcga_brca", TCGA, None, marks=needs_tcga),
    ],
)
def test_main(
    dataset: str,
    source: Path,
    sites: tuple[str, ...] | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = list(sites or [f"region-{k}" for k in range(6)])
    assert main([dataset, str(source), str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / n}" for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_main_rejects_an_unknown_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fed_ixi", "src", "out"])
    assert exc.value.code == 2
    assert "invalid choice: 'fed_ixi'" in capsys.readouterr().err


def write_gz(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def read_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_eicu_demo_sites_converts_age_and_gender_only(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    write_gz(source / "hospital.csv.gz", ["hospitalid", "region"], [["1", "Midwest"], ["2", ""]])
    patient = ["patientunitstayid", "gender", "age", "hospitalid", "admissionweight"]
    write_gz(
        source / "patient.csv.gz",
        [*patient, "hospitaldischargestatus"],
        [
            ["10", "Male", "> 89", "1", "70.5", "Expired"],
            ["11", "Female", "", "1", "", "Alive"],
            ["12", "Unknown", "45", "2", "80", "Alive"],
            ["13", "Male", "50", "1", "90", ""],  # no label: not written
            ["14", "Male", "60", "1", "90", "Alive"],  # no apacheapsvar row: not written
            ["15", "Female", "70", "1", "60", "Alive"],
        ],
    )
    physiology = {"10": "-1", "11": "7.30", "12": "", "15": "5"}
    write_gz(
        source / "apacheapsvar.csv.gz",
        ["apacheapsvarid", "patientunitstayid", *EICU_APS_FEATURES],
        [[f"9{k}", k, *[v] * len(EICU_APS_FEATURES)] for k, v in physiology.items()],
    )
    folders = eicu_demo_sites(source, tmp_path / "out")
    assert [f.name for f in folders] == list(EICU_SITES)
    written = {}
    for folder in folders:
        train, val = read(folder / "train.csv"), read(folder / "val.csv")
        assert train[0] == val[0] == list(EICU_COLUMNS)
        written[folder.name] = train[1:] + val[1:]
    n = len(EICU_APS_FEATURES)
    assert sorted(written["midwest"]) == [
        ["10", "90", "1", "70.5", *["-1"] * n, "1"],  # "> 89" -> 90; -1 kept
        ["11", "", "0", "", *["7.30"] * n, "0"],  # empty cells and "7.30" kept as they are
        ["15", "70", "0", "60", *["5"] * n, "0"],
    ]
    assert written["unknown"] == [["12", "45", "", "80", *[""] * n, "0"]]  # region NA
    assert written["south"] == written["west"] == written["northeast"] == []
    assert eicu_demo_summary(folders[0]) == (
        "midwest: 2 train, 1 val, 1 deaths, 67% of rows with a missing feature"
    )


@pytest.fixture(scope="module")
def eicu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eicu")
    eicu_demo_sites(EICU, root)
    return root


@needs_eicu
def test_eicu_demo_sites(eicu_root: Path) -> None:
    patients = {r["patientunitstayid"]: r for r in read_gz(EICU / "patient.csv.gz")}
    aps = {r["patientunitstayid"]: r for r in read_gz(EICU / "apacheapsvar.csv.gz")}
    assert sorted(p.name for p in eicu_root.iterdir()) == sorted(EICU_SITES)
    assert len(EICU_COLUMNS) == 21 and EICU_COLUMNS[0] == "patientunitstayid"
    stays: list[str] = []
    for name in EICU_SITES:
        folder = eicu_root / name
        assert sorted(p.name for p in folder.iterdir()) == ["train.csv", "val.csv"]
        train, val = read(folder / "train.csv"), read(folder / "val.csv")
        assert train[0] == val[0] == list(EICU_COLUMNS)
        rows = train[1:] + val[1:]
        assert {row[-1] for row in rows} == {"0", "1"}
        deaths = [sum(row[-1] == "1" for row in split[1:]) for split in (train, val)]
        assert (len(train) - 1, len(val) - 1, sum(deaths)) == EICU_SIZES[name]
        assert deaths[1] == round(0.3 * sum(deaths)) >= 1  # stratified: val has its share
        for row in rows:
            patient, physiology = patients[row[0]], aps[row[0]]
            assert row[-1] == {"Alive": "0", "Expired": "1"}[patient["hospitaldischargestatus"]]
            assert row[3] == patient["admissionweight"]
            assert row[4:-1] == [physiology[c] for c in EICU_APS_FEATURES]  # verbatim, -1 kept
        stays += [row[0] for row in rows]
    assert len(stays) == len(set(stays)) == 2179


@needs_eicu
def test_eicu_demo_ages_over_89_become_90_and_minus_one_is_kept(eicu_root: Path) -> None:
    patients = {r["patientunitstayid"]: r for r in read_gz(EICU / "patient.csv.gz")}
    rows = [
        row
        for f in eicu_root.iterdir()
        for file in ("train.csv", "val.csv")
        for row in read(f / file)[1:]
    ]
    old = [row[1] for row in rows if patients[row[0]]["age"] == "> 89"]
    assert len(old) > 50 and set(old) == {"90"}
    assert all(row[1] == patients[row[0]]["age"] for row in rows if row[1] != "90")
    assert not any(patients[row[0]]["age"] == "90" for row in rows)  # so every 90 was "> 89"
    gender = {"Male": "1", "Female": "0"}
    assert all(row[2] == gender.get(patients[row[0]]["gender"], "") for row in rows)
    wbc = EICU_COLUMNS.index("wbc")
    assert sum(row[wbc] == "-1" for row in rows) > 500  # APACHE's missing code, not an empty cell
    assert not any(row[wbc] == "" for row in rows)


@needs_eicu
def test_eicu_demo_sites_are_deterministic(eicu_root: Path, tmp_path: Path) -> None:
    eicu_demo_sites(EICU, tmp_path)
    first = {p.relative_to(eicu_root): p.read_bytes() for p in eicu_root.rglob("*.csv")}
    second = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.csv")}
    assert first == second and len(first) == 10
    assert not list(tmp_path.rglob("*.tmp"))


@needs_eicu
def test_main_eicu_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eicu_demo", str(EICU), str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [f"wrote {tmp_path / n}" for n in EICU_SITES]
    assert lines[5] == "midwest: 502 train, 216 val, 52 deaths, 44% of rows with a missing feature"
    assert [line.split(":")[0] for line in lines[5:]] == list(EICU_SITES)
