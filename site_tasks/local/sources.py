"""The shared real datasets as per-site folders: ``<root>/<site>/train.csv`` and ``val.csv``.

Values are copied verbatim (the raw UCI heart-disease rows keep their ``?``); only a header row is
added where the source has none. The train/validation assignment is FLamby's, its test split
becoming the site's ``val.csv``:

- Fed-Heart-Disease: ``flamby_split.csv`` assigns the rows FLamby keeps (740 of 920; it drops a row
  with any missing value outside slope, ca and thal) to train or test; the dropped rows are not
  written. Sites are the four centres, ``cleveland``, ``hungarian``, ``switzerland`` and ``va``.
- Fed-TCGA-BRCA: ``train_test_split.csv`` assigns 1,088 of the 1,096 patients of ``brca.csv`` to
  ``train_k`` or ``test_k``; site ``region-k`` gets region k's rows, in ``brca.csv`` order.

The eICU demo has no FLamby split. Its sites are the hospitals' regions (``midwest``, ``south``,
``west``, ``northeast``, and ``unknown`` where ``hospital.region`` is empty), each split 70/30 into
train and val, stratified by the label and seeded (``EICU_SEED``). A row is a unit stay with an
``apacheapsvar`` row and a discharge status of Alive or Expired (``died`` = 1 when Expired). Its
cells are the source's, APACHE's missing code -1 and empty cells included, with two conversions:
age ``> 89`` becomes 90, and gender Male / Female becomes 1 / 0 (anything else an empty cell).
APACHE IV's own predicted mortality stays in ``apachepatientresult.csv.gz``, joined on
``patientunitstayid``.

Provenance and licences: ``datasets/fed_heart_disease/SOURCE.md`` (CC BY 4.0, vendored),
``../shared/data/fed_tcga_brca/SOURCE.md`` and ``../shared/data/eicu_demo/SOURCE.md`` (ODbL v1.0,
Pollard et al. 2018). The TCGA-BRCA rows are not redistributed in this repository (GDC terms name
no open-data licence, and each row carries a patient barcode): they are read from
``$FEDMAP_TCGA_BRCA``, else ``../shared/data/fed_tcga_brca`` beside the checkout. The eICU demo
is read likewise from ``$FEDMAP_EICU_DEMO``, else ``../shared/data/eicu_demo``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

HEART_DISEASE_COLUMNS = (
    *("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg"),
    *("thalach", "exang", "oldpeak", "slope", "ca", "thal", "num"),
)
REPO = Path(__file__).resolve().parents[2]
HEART_DISEASE_SOURCE = REPO / "datasets" / "fed_heart_disease"
TCGA_BRCA_SOURCE = Path(
    os.environ.get("FEDMAP_TCGA_BRCA", REPO.parent / "shared" / "data" / "fed_tcga_brca")
)
EICU_DEMO_SOURCE = Path(
    os.environ.get("FEDMAP_EICU_DEMO", REPO.parent / "shared" / "data" / "eicu_demo")
)
HEART_DISEASE_CENTRES = ("cleveland", "hungarian", "switzerland", "va")
TCGA_BRCA_REGIONS = 6
EICU_PATIENT_FEATURES = ("age", "gender", "admissionweight")
EICU_APS_FEATURES = (
    *("heartrate", "meanbp", "respiratoryrate", "temperature", "eyes", "motor", "verbal"),
    *("intubated", "vent", "dialysis", "wbc", "hematocrit", "sodium", "creatinine", "bun"),
    "glucose",
)
EICU_COLUMNS = ("patientunitstayid", *EICU_PATIENT_FEATURES, *EICU_APS_FEATURES, "died")
EICU_REGIONS = {"Midwest": "midwest", "South": "south", "West": "west", "Northeast": "northeast"}
EICU_UNKNOWN_REGION = "unknown"
EICU_VAL_SHARE = 0.3
EICU_SEED = 0
_EICU_DIED = {"Alive": "0", "Expired": "1"}
_EICU_GENDER = {"Male": "1", "Female": "0"}
_FLAMBY_TO_FILE = {"train": "train.csv", "test": "val.csv"}


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Through a temporary file and a rename, so a reader never sees half a file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(out.getvalue())
    os.replace(tmp, path)


def heart_disease_sites(source: Path, root: Path) -> list[Path]:
    """Write one folder per centre from ``source`` (the fed_heart_disease data folder)."""
    with (source / "flamby_split.csv").open(newline="") as f:
        split = list(csv.DictReader(f))
    folders = []
    for centre in HEART_DISEASE_CENTRES:
        with (source / f"processed.{centre}.data").open(newline="") as f:
            raw = list(csv.reader(f))
        for flamby, file in _FLAMBY_TO_FILE.items():
            lines = [
                raw[int(row["raw_line"])]
                for row in split
                if row["center_name"] == centre and row["split"] == flamby
            ]
            _write(root / centre / file, HEART_DISEASE_COLUMNS, lines)
        folders.append(root / centre)
    return folders


def tcga_brca_sites(source: Path, root: Path) -> list[Path]:
    """Write ``region-0`` .. ``region-5`` from ``source`` (the fed_tcga_brca data folder)."""
    with (source / "train_test_split.csv").open(newline="") as f:
        fold = {row["pid"]: row["fold2"] for row in csv.DictReader(f)}
    with (source / "brca.csv").open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    folders = []
    for k in range(TCGA_BRCA_REGIONS):
        for flamby, file in _FLAMBY_TO_FILE.items():
            region = [row for row in rows if fold.get(row[0]) == f"{flamby}_{k}"]
            _write(root / f"region-{k}" / file, header, region)
        folders.append(root / f"region-{k}")
    return folders


def _read_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def _stratified_val(labels: Sequence[str], rng: random.Random) -> set[int]:
    """The indices of the val rows: ``round(EICU_VAL_SHARE * n)`` of each label's ``n`` rows."""
    val: set[int] = set()
    for label in sorted(set(labels)):
        index = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(index)
        val.update(index[: round(EICU_VAL_SHARE * len(index))])
    return val


def eicu_demo_sites(source: Path, root: Path) -> list[Path]:
    """Write one folder per region from ``source`` (the eicu_demo data folder), rows in
    ``patient.csv.gz`` order; age ``> 89`` is written as 90, gender as 1 (Male) / 0 (Female)."""
    region = {r["hospitalid"]: r["region"] for r in _read_gz(source / "hospital.csv.gz")}
    aps = {r["patientunitstayid"]: r for r in _read_gz(source / "apacheapsvar.csv.gz")}
    sites: dict[str, list[list[str]]] = {name: [] for name in EICU_REGIONS.values()}
    sites[EICU_UNKNOWN_REGION] = []
    for patient in _read_gz(source / "patient.csv.gz"):
        stay = patient["patientunitstayid"]
        died = _EICU_DIED.get(patient["hospitaldischargestatus"])
        if died is None or stay not in aps:
            continue
        age = "90" if patient["age"] == "> 89" else patient["age"]
        gender = _EICU_GENDER.get(patient["gender"], "")
        physiology = [aps[stay][column] for column in EICU_APS_FEATURES]
        row = [stay, age, gender, patient["admissionweight"], *physiology, died]
        sites[EICU_REGIONS.get(region[patient["hospitalid"]], EICU_UNKNOWN_REGION)].append(row)
    folders = []
    for name, rows in sites.items():
        val = _stratified_val([row[-1] for row in rows], random.Random(EICU_SEED))
        for file, in_val in (("train.csv", False), ("val.csv", True)):
            split = [row for i, row in enumerate(rows) if (i in val) == in_val]
            _write(root / name / file, EICU_COLUMNS, split)
        folders.append(root / name)
    return folders


def eicu_demo_summary(folder: Path) -> str:
    """Rows, deaths and the share of rows with a missing feature (-1 or empty) of a site folder."""
    counts, deaths, missing = [], 0, 0
    for file in ("train.csv", "val.csv"):
        with (folder / file).open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        counts.append(len(rows))
        deaths += sum(row[-1] == "1" for row in rows)
        missing += sum(any(cell in ("", "-1") for cell in row[1:-1]) for row in rows)
    share = missing / sum(counts) if sum(counts) else 0.0
    return (
        f"{folder.name}: {counts[0]} train, {counts[1]} val, {deaths} deaths, "
        f"{share:.0%} of rows with a missing feature"
    )


WRITERS = {
    "fed_heart_disease": heart_disease_sites,
    "fed_tcga_brca": tcga_brca_sites,
    "eicu_demo": eicu_demo_sites,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m site_tasks.local.sources DATASET SOURCE OUT``: write one folder per site."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m site_tasks.local.sources",
        description="Write a shared real dataset as one folder per site (OUT/<site>/train.csv and "
        "val.csv) with FLamby's train/test split, the test split becoming val.csv (the eICU "
        "demo: a seeded 70/30 split stratified by the label).",
    )
    parser.add_argument("dataset", choices=sorted(WRITERS))
    parser.add_argument("source", type=Path, help="the dataset folder, e.g. datasets/fed_tcga_brca")
    parser.add_argument("out", type=Path, help="where the site folders go")
    args = parser.parse_args(argv)
    folders = WRITERS[args.dataset](args.source, args.out)
    for folder in folders:
        print(f"wrote {folder}")
    if args.dataset == "eicu_demo":
        for folder in folders:
            print(eicu_demo_summary(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
