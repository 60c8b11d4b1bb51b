"""The demo's 14 hospitals (``fedmap.hospitals``): who they are, their tiers, and their files.

Ten tier-1 hospitals train every round: two large teaching hospitals, district hospitals and a few
small ones, with their own case mix, baseline risk and instrument calibration. Two small tier-2
hospitals fine-tune the final prior. Two tier-3 clinics from the same population score their
admissions with the released prior; their outcomes are held back in ``truth/`` for the demo's
table, never put beside their features. ``python -m site_tasks.local.demo --write-data DIR``
writes them (the ``demo_data`` stage of dvc.yaml).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedmap.hospitals import FEATURES, TARGET, Hospital, HospitalSplit, generate_hospitals

HOSPITALS: tuple[tuple[Hospital, int], ...] = (
    # (profile, tier): rows, latent severity, age shift (years), baseline log-odds, calibration
    (Hospital("site-01", 1500, 0.4, 4.0, 0.3, 1.0), 1),  # teaching hospital, sicker referrals
    (Hospital("site-02", 1200, 0.2, 2.0, 0.0, 1.5), 1),  # teaching hospital
    (Hospital("site-03", 600, 0.0, 0.0, -0.3, 1.0), 1),
    (Hospital("site-04", 500, -0.2, 6.0, 0.2, 2.0), 1),  # older patients, own lab analyser
    (Hospital("site-05", 400, 0.1, -3.0, -0.5, 1.0), 1),
    (Hospital("site-06", 220, -0.1, 3.0, 0.1, 1.0), 2),
    (Hospital("site-07", 400, 0.0, 1.0, 0.0, 1.0), 3),  # clinic: scores with the prior
    (Hospital("site-08", 300, -0.3, -5.0, -0.2, 1.5), 1),
    (Hospital("site-09", 260, 0.3, 5.0, 0.4, 1.0), 1),
    (Hospital("site-10", 220, -0.4, -2.0, -0.6, 1.0), 1),
    (Hospital("site-11", 180, 0.2, 8.0, 0.0, 2.0), 1),  # small, elderly, own analyser
    (Hospital("site-12", 150, -0.1, 0.0, 0.3, 1.0), 1),  # small
    (Hospital("site-13", 160, 0.1, -4.0, -0.2, 1.5), 2),
    (Hospital("site-14", 300, -0.1, 2.0, -0.1, 1.0), 3),  # clinic: scores with the prior
)
TIERS: dict[str, int] = {h.name: tier for h, tier in HOSPITALS}
DECIMALS: dict[str, int] = {
    "age": 0,
    "heart_rate": 0,
    "resp_rate": 0,
    "systolic_bp": 0,
    "temperature": 1,
    "spo2": 0,
    "lactate": 1,
    "creatinine": 2,
    "wbc": 1,
    "sodium": 0,
    "potassium": 1,
    "glucose": 1,
    "haemoglobin": 1,
    "platelets": 0,
    "urea": 1,
    "albumin": 0,
}
"""How many decimals each measurement is recorded with, as a hospital system would."""


def write_table(path: Path, x: NDArray[np.float64], y: Sequence[int] | None) -> None:
    """One CSV with the named measurements (and the outcome when y is given), written through a
    temporary file and renamed, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*FEATURES, TARGET] if y is not None else list(FEATURES))
        for i, row in enumerate(x):
            cells = [f"{v:.{DECIMALS[name]}f}" for name, v in zip(FEATURES, row, strict=True)]
            out.writerow([*cells, str(int(y[i]))] if y is not None else cells)
    os.replace(tmp, path)


def write_hospital(split: HospitalSplit, tier: int, out: Path) -> None:
    """Tiers 1-2: ``train.csv`` and ``val.csv``. Tier 3: ``reference.csv`` and ``score.csv``
    (features only) and the held-back outcomes of score.csv in ``truth/<site>.txt``."""
    folder = out / split.name
    folder.mkdir(parents=True, exist_ok=True)
    if tier == 3:
        write_table(folder / "reference.csv", split.train.x, None)
        write_table(folder / "score.csv", split.val.x, None)
        truth = out / "truth"
        truth.mkdir(parents=True, exist_ok=True)
        (truth / f"{split.name}.txt").write_text("\n".join(map(str, split.val.y)) + "\n")
    else:
        write_table(folder / "train.csv", split.train.x, [int(v) for v in split.train.y])
        write_table(folder / "val.csv", split.val.x, [int(v) for v in split.val.y])


def write_data(out: Path, seed: int) -> None:
    """Write the 14 hospital folders and the held-back tier-3 outcomes (``truth/``) under out."""
    profiles = tuple(h for h, _ in HOSPITALS)
    for split, (_, tier) in zip(generate_hospitals(profiles, seed), HOSPITALS, strict=True):
        write_hospital(split, tier, out)
