"""Server-side weights (softmax of log omega, sample shares) and the weighted parameter mean, at
once and streamed one site at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmap.aggregation import (
    StreamingMean,
    Weighting,
    omega_weights,
    sample_weights,
    weighted_average,
)
from fedmap.params import Params
from fedmap.priors import DiagonalPrior, sample_entries, weighted_second_moment


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


def random_sites(n: int, seed: int) -> list[Params]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "w": 3.0 * torch.randn(6, 4, generator=gen),
            "b": torch.randn(4, generator=gen, dtype=torch.float64),
            "n": torch.tensor(k, dtype=torch.int64),
        }
        for k in range(n)
    ]


LOG_OMEGA_CASES = [
    [-0.3, -0.7, -0.2, -5.0, -1.1],
    [-1e4, -1e4 + 1, -1e4 + 2, -1e4 + 0.5, -1e4 - 3],  # weights spread, far from 0
    [1e4, 0.0, -1e4, -1e4, 9999.0],  # +-1e4 together: exp of either overflows/underflows
    [-math.inf, -2.0, -1e4, -1.0, -math.inf],
]


@pytest.mark.parametrize("log_omegas", LOG_OMEGA_CASES)
@pytest.mark.parametrize("weighting", ["omega", "samples"])
@pytest.mark.parametrize("order_seed", [None, 1, 2])
def test_streaming_mean_equals_batch_in_any_order(
    log_omegas: list[float], weighting: Weighting, order_seed: int | None
) -> None:
    params = random_sites(len(log_omegas), seed=len(log_omegas))
    counts = [50, 7, 300, 1, 42]
    names = [f"site-{k}" for k in range(len(params))]
    batch_w = omega_weights(log_omegas, names) if weighting == "omega" else sample_weights(counts)
    batch = weighted_average(params, batch_w)
    order = list(range(len(params)))
    if order_seed is not None:
        gen = torch.Generator().manual_seed(order_seed)
        order = [int(k) for k in torch.randperm(len(params), generator=gen)]
    stream = StreamingMean(weighting)
    for k in order:
        stream.add(names[k], params[k], log_omegas[k], counts[k])
    assert len(stream) == len(params)
    done = stream.result()
    assert list(done.weights) == [names[k] for k in order]
    for k, name in enumerate(names):
        assert done.weights[name] == pytest.approx(float(batch_w[k]), rel=1e-12, abs=1e-300)
    assert sum(done.weights.values()) == pytest.approx(1.0, abs=1e-12)
    for name in ("w", "b"):
        assert done.mean[name].dtype == params[0][name].dtype
        torch.testing.assert_close(done.mean[name], batch[name], rtol=1e-6, atol=1e-6)
    # integer buffers come from the first site added, as weighted_average takes params[0]'s
    assert done.mean["n"].item() == order[0]
    assert done.second == {} and done.sampled == {}


def test_streaming_mean_hand_values() -> None:
    stream = StreamingMean()
    stream.add("a", {"w": torch.tensor([1.0, -1.0])}, -1e4, 1)
    stream.add("b", {"w": torch.tensor([3.0, 5.0])}, -1e4 + math.log(3.0), 1)
    done = stream.result()
    assert done.weights == pytest.approx({"a": 0.25, "b": 0.75}, rel=1e-12)
    assert done.mean["w"].tolist() == pytest.approx([2.5, 3.5], rel=1e-12)


def test_streaming_second_moment_and_samples_equal_batch() -> None:
    params = random_sites(6, seed=3)
    log_omegas = [-1e4, -1e4 + 1.5, -1e4 + 0.2, -1e4 - 1, -1e4 + 2, -1e4 + 0.7]
    weights = omega_weights(log_omegas)
    mean = weighted_average(params, weights)
    picks = {"w": sample_entries(24, 10)}
    for order in ([0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 4, 2]):
        stream = StreamingMean(moments=("w", "b"), samples=picks)
        for k in order:
            stream.add(f"s{k}", params[k], log_omegas[k], 1)
        done = stream.result()
        for name in ("w", "b"):
            torch.testing.assert_close(
                done.second[name],
                weighted_second_moment(params, weights, mean, name),
                rtol=1e-6,
                atol=1e-9,
            )
        rows = torch.stack([params[k]["w"].reshape(-1)[picks["w"]].double() for k in order])
        assert torch.equal(done.sampled["w"], rows)
        # and so the diagonal prior's closed-form fit is the batch fit
        rho = DiagonalPrior({"w": 1.0, "b": 1.0, "n": 1.0}, min_variance=0.01)
        w_rows = torch.tensor([done.weights[f"s{k}"] for k in order], dtype=torch.float64)
        streamed = rho.fit_spread(done.second, done.sampled, w_rows, done.mean, {})
        batch = rho.fit(params, weights, mean, {})
        assert set(streamed) == set(batch) == {"prior/w/log_var", "prior/b/log_var"}
        for key, value in batch.items():
            torch.testing.assert_close(streamed[key], value, rtol=1e-6, atol=1e-6)


def test_streaming_mean_keeps_no_reference_to_added_tensors() -> None:
    """What it holds is its own float64 sums: an update can be dropped (or reused) once added."""
    a, b = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}
    stream = StreamingMean(moments=("w",), samples={"w": torch.tensor([1])})
    stream.add("a", a, -1.0, 1)
    stream.add("b", b, -1.0, 1)
    a["w"].fill_(1e9)
    b["w"].fill_(-1e9)
    done = stream.result()
    assert done.mean["w"].tolist() == [2.0, 4.0]
    assert done.second["w"].tolist() == [1.0, 4.0]
    assert done.sampled["w"].tolist() == [[2.0], [6.0]]


def test_streaming_mean_errors_name_the_site() -> None:
    stream = StreamingMean()
    stream.add("site-01", {"w": torch.ones(2)}, 0.0, 1)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="site-02"):
            stream.add("site-02", {"w": torch.ones(2)}, bad, 1)
    with pytest.raises(ValueError, match="site-01 was already added"):
        stream.add("site-01", {"w": torch.ones(2)}, 0.0, 1)
    with pytest.raises(ValueError, match="site-03 sends keys"):
        stream.add("site-03", {"v": torch.ones(2)}, 0.0, 1)
    assert list(stream.weights()) == ["site-01"]  # the refused ones left nothing behind
    with pytest.raises(ValueError, match="zero site updates"):
        StreamingMean().result()
    dead = StreamingMean()
    dead.add("site-a", {"w": torch.ones(1)}, -math.inf, 1)
    dead.add("site-b", {"w": torch.ones(1)}, -math.inf, 1)
    with pytest.raises(ValueError, match=r"-inf for every site \(site-a, site-b\)"):
        dead.result()
    counts = StreamingMean("samples")
    for bad_count in (0, -3):
        with pytest.raises(ValueError, match="positive"):
            counts.add("x", {"w": torch.ones(1)}, 0.0, bad_count)
    with pytest.raises(ValueError, match="weighting must be one of"):
        StreamingMean("fedavg")  # type: ignore[arg-type]
