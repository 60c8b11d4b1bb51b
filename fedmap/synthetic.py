"""The synthetic federation of FedMAP v1, appendix B.1.

A binary task in R^30 with intrinsic dimension 4. In the intrinsic coordinates, class 0 is
N(0, var_class0 * I_4) and class 1 is a uniform direction on the 3-sphere times a radius drawn
from N(radius_mean, radius_var). The 26 nuisance coordinates are N(0, noise_var * I). One random
rotation Q (shared by every site) mixes the coordinates, then site k applies its own affine map
x -> x A_k + b_k with A_k ~ N(0, 1)^{30x30} and b_k ~ N(0, 1)^30 * shift_scale * k, so the
shift grows with the site index. Each site keeps a stratified 70/30 train/validation split.

Everything is drawn from one ``numpy.random.SeedSequence(seed)``: a site's data depends only on
the seed, its index and its own size, never on any other site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedmap.data import SiteSplit

SCENARIOS: tuple[str, ...] = ("feature-skew", "quantity-skew", "label-skew")
NUM_SITES = 10


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator constants; defaults are appendix B.1 (the authors' code used noise_var = 9)."""

    n_features: int = 30
    intrinsic_dim: int = 4
    var_class0: float = 2.0
    radius_mean: float = 8.0
    radius_var: float = 2.0
    noise_var: float = 2.0
    shift_scale: float = 5.0
    val_fraction: float = 0.3


@dataclass(frozen=True)
class SiteSpec:
    """How many rows a site holds and which fraction of them is class 0."""

    name: str
    num_rows: int
    frac_class0: float


def site_name(index: int) -> str:
    """Site names are 1-based and zero-padded: ``site-01`` .. ``site-10``."""
    return f"site-{index + 1:02d}"


def scenario_sites(scenario: str, num_sites: int = NUM_SITES) -> tuple[SiteSpec, ...]:
    """The paper's three scenarios, ten sites each (or ``num_sites``, skewing the second half).

    - feature-skew: 10 x 2000 rows, balanced classes (only the affine maps differ);
    - quantity-skew: sites 1-5 hold 2000 rows, sites 6-10 hold 500;
    - label-skew: 10 x 2000 rows, sites 6-10 are 85% class 0.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if num_sites < 1:
        raise ValueError(f"num_sites must be positive, got {num_sites}")
    specs = []
    for k in range(num_sites):
        second_half = k >= num_sites // 2
        rows = 500 if scenario == "quantity-skew" and second_half else 2000
        frac0 = 0.85 if scenario == "label-skew" and second_half else 0.5
        specs.append(SiteSpec(site_name(k), rows, frac0))
    return tuple(specs)


def random_rotation(rng: np.random.Generator, dim: int) -> NDArray[np.float64]:
    """An orthogonal matrix from the QR decomposition of a standard Gaussian matrix."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))  # sign fix makes Q Haar-distributed


def sample_intrinsic(
    rng: np.random.Generator, n0: int, n1: int, config: SyntheticConfig
) -> NDArray[np.float64]:
    """Rows in the unrotated coordinates: n0 of class 0 followed by n1 of class 1."""
    d, k = config.n_features, config.intrinsic_dim
    x = np.empty((n0 + n1, d))
    x[:n0, :k] = rng.normal(0.0, np.sqrt(config.var_class0), (n0, k))
    direction = rng.standard_normal((n1, k))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = rng.normal(config.radius_mean, np.sqrt(config.radius_var), (n1, 1))
    x[n0:, :k] = radius * direction
    x[:, k:] = rng.normal(0.0, np.sqrt(config.noise_var), (n0 + n1, d - k))
    return x


def stratified_split(
    rng: np.random.Generator, y: NDArray[np.int64], val_fraction: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Train and validation row indices with each class split val_fraction / 1 - val_fraction."""
    train, val = [], []
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = round(len(idx) * val_fraction)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def generate_site(
    spec: SiteSpec,
    index: int,
    rotation: NDArray[np.float64],
    rng: np.random.Generator,
    config: SyntheticConfig,
) -> SiteSplit:
    """One site's rows, rotated, mapped by its own affine map, and split 70/30."""
    n0 = round(spec.num_rows * spec.frac_class0)
    n1 = spec.num_rows - n0
    d = config.n_features
    a = rng.standard_normal((d, d))
    b = rng.standard_normal(d) * config.shift_scale * (index + 1)
    x = sample_intrinsic(rng, n0, n1, config) @ rotation @ a + b
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    train, val = stratified_split(rng, y, config.val_fraction)
    return SiteSplit(spec.name, x[train], y[train], x[val], y[val])


def generate(
    scenario: str, seed: int, config: SyntheticConfig | None = None, num_sites: int = NUM_SITES
) -> list[SiteSplit]:
    """The sites of a scenario (ten unless told), deterministic per seed."""
    config = config or SyntheticConfig()
    specs: Sequence[SiteSpec] = scenario_sites(scenario, num_sites)
    shared, *per_site = np.random.SeedSequence(seed).spawn(1 + len(specs))
    rotation = random_rotation(np.random.default_rng(shared), config.n_features)
    return [
        generate_site(spec, k, rotation, np.random.default_rng(ss), config)
        for k, (spec, ss) in enumerate(zip(specs, per_site, strict=True))
    ]
