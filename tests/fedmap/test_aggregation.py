"""Server-side weights (softmax of log omega, sample shares) and the weighted parameter mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmap.aggregation import omega_weights, sample_weights, weighted_average


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize(
    "log_omegas",
    [
        [-1e4, -1e4 + 1, -1e4 + 2],
        [1e4, 0.0, -1e4],
        [1e300, -1e300, 0.0],
        [-0.3, -0.7, -0.2, -5.0],
        [700.0, 710.0, 720.0],  # exp overflows float64 without the max shift
        [-800.0, -790.0],  # exp underflows to 0/0 without the max shift
    ],
)
def test_omega_weights_stable_and_equal_to_softmax(log_omegas: list[float]) -> None:
    w = omega_weights(log_omegas)
    assert w.dtype == torch.float64
    assert torch.isfinite(w).all()
    assert abs(float(w.sum()) - 1.0) < 1e-12
    np.testing.assert_allclose(w.numpy(), _softmax(log_omegas), rtol=1e-12, atol=1e-300)


def test_omega_weights_hand_values() -> None:
    w = omega_weights([-1e4, -1e4 + 1, -1e4 + 2])
    e = math.e
    z = 1 + e + e * e
    np.testing.assert_allclose(w.numpy(), [1 / z, e / z, e * e / z], rtol=1e-12)
    assert omega_weights([1e4, 0.0, -1e4]).tolist() == [1.0, 0.0, 0.0]
    # log omega = log of 1 and 3 gives weights 1/4 and 3/4
    np.testing.assert_allclose(omega_weights([0.0, math.log(3.0)]).numpy(), [0.25, 0.75])


def test_omega_weights_shift_invariant() -> None:
    base = [-0.5, -1.5, -0.25]
    w0 = omega_weights(base)
    w1 = omega_weights([v - 5e3 for v in base])
    np.testing.assert_allclose(w0.numpy(), w1.numpy(), rtol=1e-9)


def test_omega_weights_one_minus_inf_gets_zero() -> None:
    w = omega_weights([0.0, -math.inf, math.log(3.0)])
    assert torch.isfinite(w).all()
    np.testing.assert_allclose(w.numpy(), [0.25, 0.0, 0.75], rtol=1e-12)
    assert float(w[1]) == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_omega_weights_nan_or_plus_inf_raises_naming_site(bad: float) -> None:
    with pytest.raises(ValueError, match="site-02"):
        omega_weights([0.0, bad, -1.0], ["site-01", "site-02", "site-03"])
    with pytest.raises(ValueError, match="#1"):
        omega_weights([0.0, bad])


def test_omega_weights_all_minus_inf_raises_naming_sites() -> None:
    with pytest.raises(ValueError, match=r"site-a, site-b"):
        omega_weights([-math.inf, -math.inf], ["site-a", "site-b"])


def test_omega_weights_empty_raises() -> None:
    with pytest.raises(ValueError, match="zero site updates"):
        omega_weights([])


def test_sample_weights() -> None:
    w = sample_weights([100, 300, 600])
    assert w.dtype == torch.float64
    assert w.tolist() == pytest.approx([0.1, 0.3, 0.6], abs=1e-15)
    assert sample_weights([7]).tolist() == [1.0]
    for bad in ([], [10, 0], [5, -1]):
        with pytest.raises(ValueError, match="positive"):
            sample_weights(bad)


def test_weighted_average_hand_computed() -> None:
    params = [
        {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0])},
        {"w": torch.tensor([[5.0, 6.0], [7.0, 8.0]]), "b": torch.tensor([10.0])},
        {"w": torch.tensor([[-1.0, 0.0], [1.0, 2.0]]), "b": torch.tensor([-2.0])},
    ]
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    out = weighted_average(params, weights)
    assert set(out) == {"w", "b"}
    expected_w = 0.2 * np.array([[1, 2], [3, 4]]) + 0.3 * np.array([[5, 6], [7, 8]])
    expected_w = expected_w + 0.5 * np.array([[-1, 0], [1, 2]])
    np.testing.assert_allclose(out["w"].numpy(), expected_w, rtol=1e-6)
    np.testing.assert_allclose(out["b"].numpy(), [0.2 * 0 + 0.3 * 10 - 0.5 * 2], rtol=1e-6)
    assert out["w"].dtype == torch.float32
    # two sites, equal weights
    two = weighted_average(params[:2], torch.tensor([0.5, 0.5], dtype=torch.float64))
    np.testing.assert_allclose(two["w"].numpy(), [[3, 4], [5, 6]])


def test_weighted_average_sums_in_float64_and_casts_back() -> None:
    # float32 accumulation would lose the 1.0 against 1e8 and give 0; float64 keeps it
    params = [{"w": torch.tensor([v], dtype=torch.float32)} for v in (1e8, 1.0, -1e8)]
    out = weighted_average(params, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert out["w"].dtype == torch.float32
    assert out["w"].item() == torch.tensor(1 / 3, dtype=torch.float32).item()
    naive = torch.zeros(1, dtype=torch.float32)
    for p in params:
        naive += torch.tensor(1 / 3, dtype=torch.float32) * p["w"]
    assert naive.item() != out["w"].item()  # the test really distinguishes the two
    # float64 entries stay float64
    p64 = [
        {"v": torch.tensor([0.1], dtype=torch.float64)},
        {"v": torch.tensor([0.3], dtype=torch.float64)},
    ]
    out64 = weighted_average(p64, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert out64["v"].dtype == torch.float64
    assert out64["v"].item() == pytest.approx(0.2, abs=1e-16)


def test_weighted_average_integer_buffer_from_first() -> None:
    params = [
        {"w": torch.tensor([1.0]), "n": torch.tensor(3, dtype=torch.int64)},
        {"w": torch.tensor([3.0]), "n": torch.tensor(100, dtype=torch.int64)},
    ]
    out = weighted_average(params, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert out["n"].dtype == torch.int64
    assert out["n"].item() == 3
    out["n"] += 1  # a copy, not the first site's own tensor
    assert params[0]["n"].item() == 3
    assert out["w"].item() == 2.0


def test_weighted_average_errors() -> None:
    params = [{"w": torch.ones(2)}, {"w": torch.zeros(2)}]
    with pytest.raises(ValueError, match="2 parameter sets but 3 weights"):
        weighted_average(params, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="sum to 1"):
        weighted_average(params, torch.tensor([0.5, 0.4], dtype=torch.float64))
    with pytest.raises(ValueError, match="sum to 1"):
        weighted_average(params, torch.tensor([0.7, 0.7], dtype=torch.float64))
