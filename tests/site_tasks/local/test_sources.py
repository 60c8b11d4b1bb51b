"""The shared real datasets as site folders: FLamby's split, the source rows copied verbatim."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from site_tasks.local.sources import (
    HEART_DISEASE_CENTRES,
    HEART_DISEASE_COLUMNS,
    TCGA_BRCA_SOURCE,
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
