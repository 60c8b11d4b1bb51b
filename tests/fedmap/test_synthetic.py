"""The synthetic federation of FedMAP v1 (appendix B.1)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap.data import SiteSplit
from fedmap.synthetic import (
    NUM_SITES,
    SCENARIOS,
    SyntheticConfig,
    generate,
    random_rotation,
    sample_intrinsic,
    scenario_sites,
    stratified_split,
)

SITE_NAMES = [f"site-{k:02d}" for k in range(1, 11)]


@pytest.fixture(scope="module")
def federations() -> dict[str, list[SiteSplit]]:
    return {s: generate(s, 0) for s in SCENARIOS}


def _frac0(y: np.ndarray) -> float:
    return float(np.mean(y == 0))


def test_feature_skew_shapes_and_balance(federations: dict[str, list[SiteSplit]]) -> None:
    sites = federations["feature-skew"]
    assert [s.name for s in sites] == SITE_NAMES
    for s in sites:
        assert s.x_train.shape == (1400, 30)
        assert s.x_val.shape == (600, 30)
        assert s.y_train.shape == (1400,) and s.y_val.shape == (600,)
        assert s.x_train.dtype == np.float64 and s.y_train.dtype == np.int64
        assert set(np.unique(s.y_train)) == {0, 1}
        assert _frac0(s.y_train) == 0.5 and _frac0(s.y_val) == 0.5
        assert s.num_train == 1400


def test_quantity_skew_shapes(federations: dict[str, list[SiteSplit]]) -> None:
    sites = federations["quantity-skew"]
    for k, s in enumerate(sites):
        n_train, n_val = (1400, 600) if k < 5 else (350, 150)
        assert s.x_train.shape == (n_train, 30)
        assert s.x_val.shape == (n_val, 30)
        assert _frac0(s.y_train) == 0.5 and _frac0(s.y_val) == 0.5


def test_label_skew_class_proportions_exact_per_split(
    federations: dict[str, list[SiteSplit]],
) -> None:
    sites = federations["label-skew"]
    for k, s in enumerate(sites):
        assert s.x_train.shape == (1400, 30) and s.x_val.shape == (600, 30)
        frac = 0.85 if k >= 5 else 0.5
        # stratified: both splits hold exactly the site's class proportions
        assert int(np.sum(s.y_train == 0)) == round(1400 * frac)
        assert int(np.sum(s.y_val == 0)) == round(600 * frac)


def test_scenario_specs() -> None:
    assert len(scenario_sites("feature-skew")) == NUM_SITES == 10
    q = scenario_sites("quantity-skew")
    assert [s.num_rows for s in q] == [2000] * 5 + [500] * 5
    lab = scenario_sites("label-skew")
    assert [s.frac_class0 for s in lab] == [0.5] * 5 + [0.85] * 5
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        scenario_sites("nope")
    with pytest.raises(ValueError, match="unknown scenario"):
        generate("nope", 0)


def test_determinism() -> None:
    a, b, c = generate("label-skew", 7), generate("label-skew", 7), generate("label-skew", 8)
    for sa, sb, sc in zip(a, b, c, strict=True):
        for field in ("x_train", "y_train", "x_val", "y_val"):
            assert np.array_equal(getattr(sa, field), getattr(sb, field))
        assert not np.allclose(sa.x_train, sc.x_train)


def test_site_independent_of_other_sites(federations: dict[str, list[SiteSplit]]) -> None:
    """Each site has its own spawned SeedSequence: sites 1-5 are the same rows in every scenario
    (in quantity-skew sites 6-10 are smaller, which does not disturb sites 1-5)."""
    feat, qty, lab = (federations[s] for s in SCENARIOS)
    for k in range(5):
        for other in (qty, lab):
            assert np.array_equal(feat[k].x_train, other[k].x_train)
            assert np.array_equal(feat[k].y_val, other[k].y_val)
            assert np.array_equal(feat[k].x_val, other[k].x_val)
    # sites 6-10 differ in size or class balance, so their rows differ
    for k in range(5, 10):
        assert qty[k].x_train.shape[0] != feat[k].x_train.shape[0]
        assert not np.array_equal(lab[k].y_train, feat[k].y_train)


def test_sites_have_different_affine_maps(federations: dict[str, list[SiteSplit]]) -> None:
    sites = federations["feature-skew"]
    means = np.array([s.x_train.mean(axis=0) for s in sites])
    # every pair of sites has clearly different feature means
    dist = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=-1)
    assert dist[~np.eye(10, dtype=bool)].min() > 5.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_shift_grows_with_site_index(seed: int) -> None:
    sites = generate("feature-skew", seed)
    norms = [float(np.linalg.norm(s.x_train.mean(axis=0))) for s in sites]
    assert norms[9] > 3 * norms[0]
    assert np.mean(norms[5:]) > 1.5 * np.mean(norms[:5])
    # b_1 ~ N(0, 1)^30 * 5: the first site's shift is of order 5 * sqrt(30) ~ 27
    assert 10 < norms[0] < 60


def test_sample_intrinsic_structure() -> None:
    config = SyntheticConfig()
    rng = np.random.default_rng(0)
    x = sample_intrinsic(rng, 5000, 5000, config)
    assert x.shape == (10000, 30)
    class0, class1 = x[:5000], x[5000:]
    radius = np.linalg.norm(class1[:, :4], axis=1)
    assert abs(radius.mean() - 8.0) < 0.3
    assert abs(radius.var() - 2.0) < 0.3
    assert np.abs(class1[:, :4].mean(axis=0)).max() < 0.3  # uniform direction
    np.testing.assert_allclose(class0[:, :4].var(axis=0), 2.0, atol=0.15)
    assert np.abs(class0[:, :4].mean(axis=0)).max() < 0.1
    assert np.linalg.norm(class0[:, :4], axis=1).mean() < 3.0  # class 0 sits inside the shell
    np.testing.assert_allclose(x[:, 4:].var(axis=0), 2.0, atol=0.15)
    # the noise variance follows the config (the authors' code used 9)
    noisy = sample_intrinsic(rng, 2000, 2000, SyntheticConfig(noise_var=9.0))
    np.testing.assert_allclose(noisy[:, 4:].var(axis=0).mean(), 9.0, rtol=0.03)


def test_random_rotation_is_orthogonal() -> None:
    q = random_rotation(np.random.default_rng(3), 30)
    np.testing.assert_allclose(q @ q.T, np.eye(30), atol=1e-12)
    assert not np.allclose(q, np.eye(30))


def test_stratified_split_partitions_rows() -> None:
    y = np.array([0] * 70 + [1] * 30, dtype=np.int64)
    train, val = stratified_split(np.random.default_rng(1), y, 0.3)
    assert len(train) == 70 and len(val) == 30
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert int(np.sum(y[val] == 1)) == 9 and int(np.sum(y[val] == 0)) == 21
