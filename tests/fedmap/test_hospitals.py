"""The demo's hospital generator: one population, site shifts, and the learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap.hospitals import (
    CALIBRATION,
    FEATURES,
    Hospital,
    calibrate,
    draw_patients,
    generate_hospitals,
    majority_rate,
    true_logit,
)


def test_a_hospital_depends_only_on_the_seed_and_its_own_profile() -> None:
    a = (Hospital("a", 200), Hospital("b", 300, severity=0.5))
    b = (Hospital("a", 200), Hospital("b", 300, severity=0.5))
    first, second = generate_hospitals(a, 3), generate_hospitals(b, 3)
    for x, y in zip(first, second, strict=True):
        assert np.array_equal(x.train.x, y.train.x) and np.array_equal(x.val.y, y.val.y)
    other = generate_hospitals(a, 4)
    assert not np.array_equal(first[0].train.x, other[0].train.x)


def test_the_split_is_stratified_and_keeps_every_row() -> None:
    (split,) = generate_hospitals((Hospital("a", 500, val_fraction=0.4),), 0)
    assert len(split.train.y) + len(split.val.y) == 500
    assert split.train.x.shape[1] == len(FEATURES)
    ratio = split.val.y.mean() / split.train.y.mean()
    assert 0.9 < ratio < 1.1


def test_case_mix_and_baseline_move_prevalence() -> None:
    rng = np.random.default_rng(0)
    base = draw_patients(rng, Hospital("a", 4000), 4000).y.mean()
    sicker = draw_patients(rng, Hospital("a", 4000, severity=0.6), 4000).y.mean()
    lower = draw_patients(rng, Hospital("a", 4000, baseline=-1.0), 4000).y.mean()
    assert sicker > base + 0.05 and lower < base - 0.05


def test_calibration_moves_only_the_instrument_columns() -> None:
    rng = np.random.default_rng(1)
    x = draw_patients(rng, Hospital("a", 300, calibration=0.0), 300).x
    moved = calibrate(np.random.default_rng(2), x, scale=2.0)
    for j, name in enumerate(FEATURES):
        same = np.allclose(moved[:, j], x[:, j])
        assert same == (name not in CALIBRATION), name


def test_the_risk_is_learnable_and_needs_more_than_a_small_site() -> None:
    """The outcome is far from a coin flip (the Bayes rule scores well above the majority rate),
    and the truth is not linear: its U-shapes leave a linear rule well below the Bayes rule."""
    rng = np.random.default_rng(5)
    rows = draw_patients(rng, Hospital("a", 20000, calibration=0.0), 20000)
    logit = true_logit(rows.x, 0.0)
    bayes = float(np.mean((logit > 0) == rows.y))
    assert bayes > majority_rate(rows.y) + 0.2
    # the best linear rule in the raw features, fitted by least squares on the true logit
    design = np.column_stack([rows.x, np.ones(len(rows.y))])
    coef, *_ = np.linalg.lstsq(design, logit, rcond=None)
    linear = float(np.mean((design @ coef > 0) == rows.y))
    assert linear < bayes - 0.03


def test_majority_rate() -> None:
    assert majority_rate(np.array([0, 0, 0, 1])) == 0.75
    assert majority_rate(np.array([1, 1, 0, 1, 1])) == 0.8
    with pytest.raises(ValueError, match="no outcomes"):
        majority_rate(np.array([], dtype=np.int64))
