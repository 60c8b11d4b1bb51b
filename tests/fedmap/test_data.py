"""A site's split on disk (CSV round trip, validation of what is read) and standardisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmap.data import (
    TASKS,
    SiteData,
    SiteSplit,
    feature_names,
    read_federation,
    read_site,
    standardise,
    write_site,
)
from fedmap.synthetic import generate


def _split(name: str = "site-01", seed: int = 0, n: int = 50, d: int = 30) -> SiteSplit:
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-6, 6, size=(1, d))  # many orders of magnitude
    return SiteSplit(
        name,
        rng.standard_normal((n, d)) * scale + 3.0,
        rng.integers(0, 2, n).astype(np.int64),
        rng.standard_normal((n // 2, d)) * scale - 1.0,
        rng.integers(0, 2, n // 2).astype(np.int64),
    )


def test_round_trip(tmp_path: Path) -> None:
    split = _split()
    folder = write_site(split, tmp_path)
    assert folder == tmp_path / "site-01"
    assert sorted(p.name for p in folder.iterdir()) == ["train.csv", "val.csv"]  # no temp files
    back = read_site(folder)
    assert back.name == "site-01"
    np.testing.assert_allclose(back.x_train, split.x_train, rtol=1e-8, atol=0)
    np.testing.assert_allclose(back.x_val, split.x_val, rtol=1e-8, atol=0)
    assert np.array_equal(back.y_train, split.y_train) and back.y_train.dtype == np.int64
    assert np.array_equal(back.y_val, split.y_val)


def test_round_trip_synthetic_site(tmp_path: Path) -> None:
    split = generate("quantity-skew", 3)[9]
    back = read_site(write_site(split, tmp_path))
    assert back.x_train.shape == (350, 30)
    np.testing.assert_allclose(back.x_train, split.x_train, rtol=1e-8, atol=0)


def test_header(tmp_path: Path) -> None:
    folder = write_site(_split(), tmp_path)
    header = (folder / "train.csv").read_text().splitlines()[0]
    assert header == ",".join([f"x{j:02d}" for j in range(30)] + ["label"])
    assert feature_names(3) == ["x00", "x01", "x02"]
    assert len((folder / "val.csv").read_text().splitlines()) == 1 + 25


def _write_pair(folder: Path, train: str, val: str = "x00,x01,label\n0.5,1.5,0\n") -> None:
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text(train)
    (folder / "val.csv").write_text(val)


def test_read_rejects_bad_label_value(tmp_path: Path) -> None:
    folder = tmp_path / "site-x"
    _write_pair(folder, "x00,x01,label\n0.1,0.2,0\n0.3,0.4,2\n")
    with pytest.raises(ValueError, match="only 0 and 1") as err:
        read_site(folder)
    assert str(folder / "train.csv") in str(err.value)


def test_read_rejects_wrong_last_column(tmp_path: Path) -> None:
    folder = tmp_path / "site-y"
    _write_pair(folder, "x00,x01,label\n0.1,0.2,0\n", "x00,x01,target\n0.1,0.2,1\n")
    with pytest.raises(ValueError, match="'target'") as err:
        read_site(folder)
    assert str(folder / "val.csv") in str(err.value)


def test_read_rejects_column_count_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "site-z"
    _write_pair(folder, "x00,x01,label\n0.1,0.2,0.3,1\n")
    with pytest.raises(ValueError, match="row 2 has 4 cells, the header 3") as err:
        read_site(folder)
    assert str(folder / "train.csv") in str(err.value)


def test_standardise_uses_training_statistics_only() -> None:
    rng = np.random.default_rng(4)
    x_train = rng.normal(5.0, 3.0, (200, 3))
    x_val = rng.normal(8.0, 1.0, (80, 3))  # shifted: must not be re-centred
    split = SiteSplit("s", x_train, np.zeros(200, np.int64), x_val, np.ones(80, np.int64))
    data = standardise(split)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.float32
    np.testing.assert_allclose(data.x_train.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0, unbiased=False).numpy(), 1.0, atol=1e-5)
    expected_val = (x_val - x_train.mean(0)) / x_train.std(0)
    np.testing.assert_allclose(data.x_val.numpy(), expected_val, rtol=1e-5, atol=1e-5)
    assert np.abs(data.x_val.mean(0).numpy()).min() > 0.5
    assert data.y_val.tolist() == [1.0] * 80
    assert (data.num_train, data.num_features, data.name) == (200, 3, "s")


def test_standardise_constant_column_maps_to_zero() -> None:
    x_train = np.column_stack([np.full(10, 4.0), np.arange(10.0)])
    x_val = np.column_stack([np.full(5, 4.0), np.arange(5.0)])
    split = SiteSplit("s", x_train, np.zeros(10, np.int64), x_val, np.zeros(5, np.int64))
    data = standardise(split)
    assert not torch.isnan(data.x_train).any() and not torch.isnan(data.x_val).any()
    assert torch.equal(data.x_train[:, 0], torch.zeros(10))
    assert torch.equal(data.x_val[:, 0], torch.zeros(5))


def test_read_federation(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no site folders"):
        read_federation(tmp_path)
    write_site(_split("site-02", seed=2), tmp_path)
    write_site(_split("site-01", seed=1), tmp_path)
    (tmp_path / "notes").mkdir()  # a folder without train.csv is not a site
    sites = read_federation(tmp_path)
    assert [s.name for s in sites] == ["site-01", "site-02"]
    np.testing.assert_allclose(sites[1].x_val, _split("site-02", seed=2).x_val, rtol=1e-8)


def test_site_data_task_and_target_shapes() -> None:
    assert TASKS == ("binary", "survival")
    x = torch.zeros(4, 3)
    binary = SiteData("s", x, torch.zeros(4), x, torch.ones(4))
    assert binary.task == "binary"
    survival = SiteData("s", x, torch.ones(4, 2), x, torch.ones(4, 2), task="survival")
    assert (survival.num_train, survival.num_features) == (4, 3)
    with pytest.raises(ValueError, match=r"survival y_val must have shape \(N, 2\)"):
        SiteData("s", x, torch.ones(4, 2), x, torch.ones(4), task="survival")
    with pytest.raises(ValueError, match=r"binary y_train must have shape \(N,\)"):
        SiteData("s", x, torch.ones(4, 2), x, torch.ones(4))
    with pytest.raises(ValueError, match="task must be one of binary, survival"):
        SiteData("s", x, torch.ones(4), x, torch.ones(4), task="regression")  # type: ignore[arg-type]
