"""The demo's hospitals: one patient population, measured the same way everywhere, with the shifts
real hospitals show (docs/hospitals.md).

Every hospital records the same sixteen measurements at admission and the same outcome
(deterioration within 48 hours). What differs between hospitals is what differs in practice:

- **case mix**: a hospital's patients are older or sicker on average (a shift of the latent
  severity z and of age);
- **prevalence**: a hospital-specific baseline risk b_k (its intercept);
- **calibration**: each hospital's own lab analyser and thermometers read with a gain and an
  offset (x_obs = g_kj x_true + o_kj on temperature, lactate, creatinine and white cell count);
- **size**: two large teaching hospitals, several district hospitals, and a few small ones.

The outcome follows one shared risk function of the *true* values, with two U-shapes (fever or
hypothermia, a high or low white cell count) and an interaction (age with lactate), so that a
hospital with a few hundred patients cannot learn it alone, but the federation can:

    logit p(y = 1 | x) = 2 [b_k + 0.045 (age - 65) + 0.04 (hr - 85) + 0.15 (rr - 18)
                            - 0.03 (sbp - 120) + 1.8 |temp - 37| - 0.25 (spo2 - 96)
                            + 1.2 log(lactate / 1.5) (1 + [age > 75]) + 0.9 log(creat)
                            + 0.4 |wbc - 9| + 0.25 |sodium - 139| - 0.03 (albumin - 38) - 3.2]

Potassium, glucose, haemoglobin, platelets and urea are recorded but carry no risk of their own
beyond what they share with the latent severity (as in practice, some measurements are noise).

A tier-3 clinic draws its patients from the same population (its own case mix and calibration,
close to the average), so the federation's prior has something to transfer; its outcomes are
returned separately, never written beside its features.

Everything is drawn from one ``numpy.random.SeedSequence(seed)``; a hospital's rows depend only on
the seed, its index and its own profile. The paper's generator (``fedmap.synthetic``) stays for the
reproduction of its tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedmap.synthetic import stratified_split

FEATURES: tuple[str, ...] = (
    "age",
    "heart_rate",
    "resp_rate",
    "systolic_bp",
    "temperature",
    "spo2",
    "lactate",
    "creatinine",
    "wbc",
    "sodium",
    "potassium",
    "glucose",
    "haemoglobin",
    "platelets",
    "urea",
    "albumin",
)
TARGET = "deteriorated"
SHARPNESS = 2.0
"""Scales the whole log-odds: larger is a less noisy outcome (a higher Bayes accuracy)."""
CALIBRATION: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 0.25),
    "lactate": (0.08, 0.15),
    "creatinine": (0.08, 0.08),
    "wbc": (0.06, 0.5),
}
"""The measurements whose reading depends on the hospital's own instruments: (s_g, s_o), the
spread of the log gain and of the offset (in the measurement's unit) across hospitals."""


@dataclass(frozen=True)
class Hospital:
    """One hospital's profile: its size, case mix, baseline risk and how it measures."""

    name: str
    rows: int
    severity: float = 0.0
    """Mean of the latent severity z of its admissions (0: the population's)."""
    age_shift: float = 0.0
    """Years added to the population's mean age of 65."""
    baseline: float = 0.0
    """b_k, added to every patient's log-odds of deterioration."""
    calibration: float = 1.0
    """How far its instruments are from the reference: scales the drawn gains and offsets."""
    val_fraction: float = 0.4


@dataclass(frozen=True)
class Patients:
    """Rows of one hospital: the measurements as it records them, and the outcomes."""

    x: NDArray[np.float64]
    y: NDArray[np.int64]


def true_logit(x: NDArray[np.float64], baseline: float) -> NDArray[np.float64]:
    """The shared risk function of the module docstring, on the true (reference) values."""
    c = {name: x[:, j] for j, name in enumerate(FEATURES)}
    age, lactate = c["age"], c["lactate"]
    return SHARPNESS * (
        baseline
        + 0.045 * (age - 65)
        + 0.04 * (c["heart_rate"] - 85)
        + 0.15 * (c["resp_rate"] - 18)
        - 0.03 * (c["systolic_bp"] - 120)
        + 1.8 * np.abs(c["temperature"] - 37)
        - 0.25 * (c["spo2"] - 96)
        + 1.2 * np.log(lactate / 1.5) * (1 + (age > 75))
        + 0.9 * np.log(c["creatinine"])
        + 0.4 * np.abs(c["wbc"] - 9)
        + 0.25 * np.abs(c["sodium"] - 139)
        - 0.03 * (c["albumin"] - 38)
        - 3.2
    )


def draw_patients(rng: np.random.Generator, hospital: Hospital, n: int) -> Patients:
    """n admissions: latent severity z ~ N(severity, 1); vitals and labs that move with z, with a
    fever-or-hypothermia and a high-or-low white-count branch; outcome y ~ Bernoulli(sigmoid of
    :func:`true_logit`); then the hospital's calibration applied to the recorded values."""
    z = rng.normal(hospital.severity, 1.0, n)
    noise = rng.standard_normal((n, len(FEATURES)))
    hot = np.where(rng.random(n) < 0.75, 1.0, -1.0)  # fever, or hypothermia
    high = np.where(rng.random(n) < 0.7, 1.0, -1.0)  # leucocytosis, or leucopenia
    age = np.clip(65 + hospital.age_shift + 15 * noise[:, 0] + 3 * z, 18, 100)
    x = np.column_stack(
        [
            age,
            85 + 9 * z + 12 * noise[:, 1],
            18 + 2.5 * z + 3 * noise[:, 2],
            122 - 9 * z + 16 * noise[:, 3],
            37 + hot * np.abs(0.7 * z + 0.5 * noise[:, 4]),
            np.clip(96.5 - 1.2 * z + 1.5 * noise[:, 5], 70, 100),
            np.exp(0.35 + 0.3 * z + 0.35 * noise[:, 6]),
            np.exp(0.05 + 0.2 * z + 0.3 * noise[:, 7] + 0.008 * (age - 65)),
            np.clip(9 + high * np.abs(2.5 * z + 2.5 * noise[:, 8]), 0.3, None),
            139 - 1.5 * z + 4 * noise[:, 9],
            4.2 + 0.15 * z + 0.45 * noise[:, 10],
            np.exp(1.9 + 0.1 * z + 0.3 * noise[:, 11]),
            13.0 - 0.5 * z + 1.8 * noise[:, 12],
            np.exp(5.4 - 0.15 * z + 0.35 * noise[:, 13]),
            np.exp(1.9 + 0.25 * z + 0.4 * noise[:, 14]),
            38 - 2.5 * z + 4.5 * noise[:, 15],
        ]
    )
    p = 1.0 / (1.0 + np.exp(-true_logit(x, hospital.baseline)))
    y = (rng.random(n) < p).astype(np.int64)
    return Patients(calibrate(rng, x, hospital.calibration), y)


def calibrate(
    rng: np.random.Generator, x: NDArray[np.float64], scale: float
) -> NDArray[np.float64]:
    """x_obs_j = g_j x_j + o_j on the :data:`CALIBRATION` columns, with log g_j ~ N(0, (scale
    s_g)^2) and o_j ~ N(0, (scale s_o)^2): each hospital's instruments read a little high or low,
    and with their own gain."""
    out = x.copy()
    for name, (gain_sd, offset_sd) in CALIBRATION.items():
        j = FEATURES.index(name)
        gain = math.exp(gain_sd * scale * rng.standard_normal())
        out[:, j] = gain * x[:, j] + offset_sd * scale * rng.standard_normal()
    return out


@dataclass(frozen=True)
class HospitalSplit:
    """A hospital's train and validation rows (for tier 3: reference and to-score rows)."""

    name: str
    train: Patients
    val: Patients


def split(
    rng: np.random.Generator, name: str, rows: Patients, val_fraction: float
) -> HospitalSplit:
    """A stratified split (``fedmap.synthetic.stratified_split``): each class sends
    round(val_fraction n_c) rows to validation."""
    tr, va = stratified_split(rng, rows.y, val_fraction)
    return HospitalSplit(name, Patients(rows.x[tr], rows.y[tr]), Patients(rows.x[va], rows.y[va]))


def generate_hospitals(hospitals: tuple[Hospital, ...], seed: int) -> list[HospitalSplit]:
    """Each hospital's rows from its own child of ``SeedSequence(seed)``, split train/val."""
    children = np.random.SeedSequence(seed).spawn(len(hospitals))
    out = []
    for hospital, child in zip(hospitals, children, strict=True):
        rng = np.random.default_rng(child)
        rows = draw_patients(rng, hospital, hospital.rows)
        out.append(split(rng, hospital.name, rows, hospital.val_fraction))
    return out


def majority_rate(y: NDArray[np.int64]) -> float:
    """The share of the more frequent class: the accuracy of always predicting it."""
    if len(y) == 0:
        raise ValueError("no outcomes")
    positive = float(np.mean(y))
    return max(positive, 1.0 - positive)
