"""The shared real datasets as per-site folders: ``<root>/<site>/train.csv`` and ``val.csv``.

Values are copied verbatim (the raw UCI heart-disease rows keep their ``?``); only a header row is
added where the source has none. The train/validation assignment is FLamby's, its test split
becoming the site's ``val.csv``:

- Fed-Heart-Disease: ``flamby_split.csv`` assigns the rows FLamby keeps (740 of 920; it drops a row
  with any missing value outside slope, ca and thal) to train or test; the dropped rows are not
  written. Sites are the four centres, ``cleveland``, ``hungarian``, ``switzerland`` and ``va``.
- Fed-TCGA-BRCA: ``train_test_split.csv`` assigns 1,088 of the 1,096 patients of ``brca.csv`` to
  ``train_k`` or ``test_k``; site ``region-k`` gets region k's rows, in ``brca.csv`` order.

Provenance and licences: ``datasets/fed_heart_disease/SOURCE.md`` (CC BY 4.0, vendored) and
``../shared/data/fed_tcga_brca/SOURCE.md``. The TCGA-BRCA rows are not redistributed in this
repository (GDC terms name no open-data licence, and each row carries a patient barcode): they are
read from ``$FEDMAP_TCGA_BRCA``, else ``../shared/data/fed_tcga_brca`` beside the checkout.
"""

from __future__ import annotations

import csv
import io
import os
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
HEART_DISEASE_CENTRES = ("cleveland", "hungarian", "switzerland", "va")
TCGA_BRCA_REGIONS = 6
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


WRITERS = {"fed_heart_disease": heart_disease_sites, "fed_tcga_brca": tcga_brca_sites}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m site_tasks.local.sources DATASET SOURCE OUT``: write one folder per site."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m site_tasks.local.sources",
        description="Write a shared real dataset as one folder per site (OUT/<site>/train.csv and "
        "val.csv) with FLamby's train/test split, the test split becoming val.csv.",
    )
    parser.add_argument("dataset", choices=sorted(WRITERS))
    parser.add_argument("source", type=Path, help="the dataset folder, e.g. datasets/fed_tcga_brca")
    parser.add_argument("out", type=Path, help="where the site folders go")
    args = parser.parse_args(argv)
    for folder in WRITERS[args.dataset](args.source, args.out):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
