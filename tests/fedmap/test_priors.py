"""Priors as Params: the key format, the diagonal MLE, the ICNN prior's density, safetensors."""

from __future__ import annotations

import math

import pytest
import torch

from fedmap import icnn
from fedmap.messages import decode_params, encode_params, make_manifest, open_message, specs_of
from fedmap.objective import gaussian_prior_penalty
from fedmap.params import Params
from fedmap.priors import (
    PRIOR_NAMES,
    DiagonalPrior,
    GaussianPrior,
    ICNNPrior,
    prior_mean,
    split_prior,
    state_key,
    tensor_state,
)

VARIANCES = {"first.weight": math.inf, "w": 2.0, "b": 0.5}


def sites(n: int = 4, seed: int = 0, spread: float = 1.0) -> list[Params]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "first.weight": torch.randn(3, 2, generator=gen),
            "w": spread * torch.randn(5, 3, generator=gen),
            "b": spread * torch.randn(3, generator=gen),
        }
        for _ in range(n)
    ]


def weighted_mean(thetas: list[Params], w: torch.Tensor) -> Params:
    return {k: sum(float(wk) * t[k] for wk, t in zip(w, thetas, strict=True)) for k in thetas[0]}  # type: ignore[misc]


WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def icnn_prior(min_variance: float = 1e-3) -> ICNNPrior:
    return ICNNPrior(VARIANCES, min_variance, alpha=0.1, width=6, steps=60, samples=4096)


def test_prior_names() -> None:
    assert PRIOR_NAMES == ("gaussian", "diagonal", "icnn")


def test_split_prior_and_key_format() -> None:
    mean = {"body.0.weight": torch.ones(2, 2), "head.bias": torch.zeros(1)}
    state = {state_key("head.bias", "log_var"): torch.zeros(1)}
    assert state_key("head.bias", "icnn.out") == "prior/head.bias/icnn.out"
    got_mean, got_state = split_prior({**mean, **state})
    assert got_mean == mean and got_state == state
    assert prior_mean({**mean, **state}) == mean
    assert split_prior(mean) == (mean, {})  # a Gaussian prior has no state
    assert tensor_state(state, "head.bias") == {"log_var": state["prior/head.bias/log_var"]}
    assert tensor_state(state, "head") == {}  # no prefix confusion between tensor names


def test_gaussian_prior_is_the_v1_penalty_and_has_no_state() -> None:
    thetas = sites()
    mean = thetas[0]
    rho = GaussianPrior(VARIANCES)
    theta = thetas[1]
    assert torch.equal(rho.penalty(theta, mean), gaussian_prior_penalty(theta, mean, VARIANCES))
    assert rho.log_normaliser(theta, mean) == 0.0
    assert rho.fit(thetas, WEIGHTS, mean, {}) == {}


def test_diagonal_fit_is_the_weighted_mle_with_floor() -> None:
    thetas = sites(spread=1.0)
    mean = weighted_mean(thetas, WEIGHTS)
    state = DiagonalPrior(VARIANCES, min_variance=0.05).fit(thetas, WEIGHTS, mean, {})
    assert set(state) == {"prior/w/log_var", "prior/b/log_var"}  # the input layer is not fitted
    for name in ("w", "b"):
        mle = sum(
            float(wk) * (t[name].double() - mean[name].double()) ** 2
            for wk, t in zip(WEIGHTS, thetas, strict=True)
        )
        expected = torch.clamp(torch.as_tensor(mle), min=0.05)
        got = state[f"prior/{name}/log_var"].double().exp()
        assert got.shape == mean[name].shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
        assert state[f"prior/{name}/log_var"].dtype == torch.float32
    # coinciding sites: every variance sits on the floor instead of collapsing to 0
    same = [thetas[0]] * 4
    floored = DiagonalPrior(VARIANCES, min_variance=0.05).fit(same, WEIGHTS, thetas[0], {})
    assert all(torch.allclose(v.exp(), torch.tensor(0.05)) for v in floored.values())


def test_diagonal_density_is_the_normal_log_density() -> None:
    thetas = sites()
    mean = weighted_mean(thetas, WEIGHTS)
    rho = DiagonalPrior(VARIANCES, min_variance=0.01)
    prior = {**mean, **rho.fit(thetas, WEIGHTS, mean, {})}
    theta = sites(seed=9)[0]
    neg_log = float(rho.penalty(theta, prior)) + rho.log_normaliser(theta, prior)
    expected = 0.0
    for name in ("w", "b"):
        var = prior[f"prior/{name}/log_var"].double().exp()
        z2 = (theta[name].double() - mean[name].double()) ** 2 / var
        expected += float((0.5 * z2 + 0.5 * torch.log(2 * math.pi * var)).sum())
    assert neg_log == pytest.approx(expected, rel=1e-5)


def test_tensors_without_state_fall_back_to_the_configured_gaussian() -> None:
    thetas = sites()
    mean = thetas[0]
    theta = thetas[1]
    for rho in (DiagonalPrior(VARIANCES, 0.1), icnn_prior()):
        assert torch.allclose(
            rho.penalty(theta, mean), gaussian_prior_penalty(theta, mean, VARIANCES)
        )
        # the normalised Gaussian over w and b; the unpenalised input layer adds nothing
        expected = 0.5 * 15 * math.log(2 * math.pi * 2.0) + 0.5 * 3 * math.log(2 * math.pi * 0.5)
        assert rho.log_normaliser(theta, mean) == pytest.approx(expected)


def test_unpenalised_tensor_is_ignored_by_every_family() -> None:
    thetas = sites()
    mean = weighted_mean(thetas, WEIGHTS)
    for rho in (DiagonalPrior(VARIANCES, 0.1), icnn_prior()):
        prior = {**mean, **rho.fit(thetas, WEIGHTS, mean, {})}
        assert not tensor_state(split_prior(prior)[1], "first.weight")
        moved = dict(thetas[1])
        moved["first.weight"] = moved["first.weight"] + 100.0
        assert torch.equal(rho.penalty(moved, prior), rho.penalty(thetas[1], prior))


def test_icnn_prior_state_scale_floor_and_warm_start() -> None:
    thetas = sites(spread=0.5)
    mean = weighted_mean(thetas, WEIGHTS)
    rho = icnn_prior()
    state = rho.fit(thetas, WEIGHTS, mean, {})
    assert set(state) == {
        state_key(t, e)
        for t in ("w", "b")
        for e in ("scale", *(f"icnn.{k}" for k in icnn.PARAM_NAMES))
    }
    assert all(v.dtype == torch.float32 and v.is_floating_point() for v in state.values())
    # the scale is the weighted RMS deviation of each tensor
    dev = sum(
        float(wk) * float(((t["w"] - mean["w"]) ** 2).mean())
        for wk, t in zip(WEIGHTS, thetas, strict=True)
    )
    assert float(state["prior/w/scale"]) == pytest.approx(math.sqrt(dev), rel=1e-5)
    # a large min_variance floors it at sqrt(C min_variance)
    big = ICNNPrior(VARIANCES, 4.0, 0.1, 6, 5, 4096).fit(thetas, WEIGHTS, mean, {})
    assert float(big["prior/w/scale"]) == pytest.approx(
        math.sqrt(icnn.curvature_bound(0.1) * 4.0), rel=1e-6
    )

    # the next round warm-starts from the previous psi: one step from there beats one step cold
    def loss(st: Params) -> float:
        u = torch.stack([(t["w"] - mean["w"]).reshape(-1) for t in thetas]).double()
        u = u / float(st["prior/w/scale"])
        raw = {k: st[f"prior/w/icnn.{k}"].double() for k in icnn.PARAM_NAMES}
        return float(icnn.fit_loss(raw, u, WEIGHTS, 0.1))

    one_step = ICNNPrior(VARIANCES, 1e-3, 0.1, 6, 1, 4096)
    warm, cold = one_step.fit(thetas, WEIGHTS, mean, state), one_step.fit(thetas, WEIGHTS, mean, {})
    assert loss(warm) <= loss(state) + 1e-6
    assert loss(warm) < loss(cold) - 0.01


def test_icnn_prior_penalty_is_convex_in_theta() -> None:
    thetas = sites(spread=0.5)
    mean = weighted_mean(thetas, WEIGHTS)
    rho = icnn_prior()
    prior = {**mean, **rho.fit(thetas, WEIGHTS, mean, {})}
    gen = torch.Generator().manual_seed(4)
    for _ in range(200):
        a = {k: v + 2.0 * torch.randn(v.shape, generator=gen) for k, v in mean.items()}
        b = {k: v + 2.0 * torch.randn(v.shape, generator=gen) for k, v in mean.items()}
        lam = float(torch.rand((), generator=gen))
        mid = {k: lam * a[k] + (1 - lam) * b[k] for k in a}
        chord = lam * float(rho.penalty(a, prior)) + (1 - lam) * float(rho.penalty(b, prior))
        assert float(rho.penalty(mid, prior)) <= chord + 1e-4 * (1 + abs(chord))


def test_icnn_prior_is_a_normalised_density_never_sharper_than_the_floor() -> None:
    thetas = sites(spread=0.3)
    mean = weighted_mean(thetas, WEIGHTS)
    rho = icnn_prior(min_variance=0.02)
    prior = {**mean, **rho.fit(thetas, WEIGHTS, mean, {})}
    centre = float(mean["b"][0])
    one = {**prior, "b": mean["b"][:1].double()}  # a one-entry tensor with b's prior state
    # -log rho at 200001 points spaced 1e-4 apart (not the u-grid of the quadrature under test)
    xs = torch.linspace(centre - 10, centre + 10, 200001, dtype=torch.float64)
    dens = torch.tensor(
        [
            float(rho.penalty({"b": x.reshape(1)}, one))
            + rho.log_normaliser({"b": x.reshape(1)}, one)
            for x in xs[::1000]
        ],
        dtype=torch.float64,
    )
    weights = icnn.constrain({k: prior[f"prior/b/icnn.{k}"].double() for k in icnn.PARAM_NAMES})
    scale = float(prior["prior/b/scale"])
    log_z = rho.log_normaliser({"b": xs[:1]}, one)  # log Z_b + log s_b for one entry
    neg_log = icnn.icnn_value(weights, (xs - centre) / scale, 0.1) + log_z
    assert torch.allclose(neg_log[::1000], dens, atol=1e-5)
    total = float(torch.trapezoid(torch.exp(-neg_log), xs))
    assert total == pytest.approx(1.0, abs=1e-6)
    # curvature of -log rho in theta never exceeds 1 / min_variance
    x = torch.linspace(centre - 3, centre + 3, 601, dtype=torch.float64, requires_grad=True)
    value = icnn.icnn_value(weights, (x - centre) / scale, 0.1)
    (d1,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    assert float(d2.max()) <= 1 / 0.02


@pytest.mark.parametrize("family", ["diagonal", "icnn"])
def test_prior_state_round_trips_through_safetensors(family: str) -> None:
    thetas = sites()
    mean = weighted_mean(thetas, WEIGHTS)
    rho = DiagonalPrior(VARIANCES, 0.1) if family == "diagonal" else icnn_prior()
    prior = {**mean, **rho.fit(thetas, WEIGHTS, mean, {})}
    blob = encode_params(prior)
    decoded = decode_params(blob)
    assert set(decoded) == set(prior)
    assert all(torch.equal(decoded[k], prior[k]) for k in prior)
    manifest = make_manifest("prior", 2, prior, blob)
    opened = open_message(manifest, blob, "prior", 2, specs_of(prior))
    theta = thetas[2]
    assert torch.equal(rho.penalty(theta, opened), rho.penalty(theta, prior))
    assert rho.log_normaliser(theta, opened) == rho.log_normaliser(theta, prior)


def test_neg_log_density_is_non_negative_when_the_floor_is_at_least_one_over_2pi() -> None:
    """The density never exceeds 1 / sqrt(2 pi min_variance) per coordinate, so with min_variance
    >= 1 / (2 pi) -log rho >= 0 and log omega stays <= 0 (``fedmap.messages`` requires it), even
    when every site sent the same parameters (the sharpest prior a fit can produce)."""
    same = [sites()[0]] * 4
    floor = 1 / (2 * math.pi)
    for rho in (DiagonalPrior(VARIANCES, floor), icnn_prior(min_variance=floor)):
        prior = {**same[0], **rho.fit(same, WEIGHTS, same[0], {})}
        at_mode = float(rho.penalty(same[0], prior)) + rho.log_normaliser(same[0], prior)
        assert at_mode >= -1e-3
    tight = DiagonalPrior(VARIANCES, 0.01)
    prior = {**same[0], **tight.fit(same, WEIGHTS, same[0], {})}
    assert float(tight.penalty(same[0], prior)) + tight.log_normaliser(same[0], prior) < 0
