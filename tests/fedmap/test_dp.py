"""The Gaussian mechanism of ``fedmap.dp``, against what ``fedmap.privacy`` accounts for: the
release's norm is at most a_k C whatever the step, a_k is in [exp(-R), 1], the noise has std z C
(numerator) and z (denominator) and mean 0, and the centre's mean is the weighted mean."""

from __future__ import annotations

import math

import pytest
import torch

from fedmap.dp import (
    Release,
    clamp_weight,
    clip_factor,
    delta_norm,
    floor,
    noise_variance,
    private_mean,
    release,
    sum_releases,
)
from fedmap.params import Params
from fedmap.privacy import Privacy

pytestmark = pytest.mark.privacy

SIGMAS = 5.0
"""Statistical bounds are at 5 standard errors: a false alarm about once in 3.5 million runs."""


def _model(gen: torch.Generator, scale: float, dtype: torch.dtype = torch.float64) -> Params:
    return {
        "w": torch.randn(6, 5, generator=gen, dtype=dtype) * scale,
        "b": torch.randn(5, generator=gen, dtype=dtype) * scale,
    }


def _norm(params: Params) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in params.values()))


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_delta_norm_and_clip_factor() -> None:
    theta = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]])}
    mu = {"a": torch.zeros(2), "b": torch.zeros(1, 1)}
    assert delta_norm(theta, mu) == 5.0
    assert clip_factor(5.0, 1.0) == 0.2
    assert clip_factor(0.5, 1.0) == 1.0
    assert clip_factor(1.0, 1.0) == 1.0


def test_clamp_weight_is_in_its_range() -> None:
    r = 5.0
    for log_omega in torch.linspace(-20.0, 20.0, 401).tolist():
        a = clamp_weight(log_omega, r)
        assert math.exp(-r) <= a <= 1.0
        if -r <= log_omega <= 0:
            assert a == pytest.approx(math.exp(log_omega), rel=1e-12)
    assert clamp_weight(3.0, r) == 1.0
    assert clamp_weight(-7.0, r) == math.exp(-r)


@pytest.mark.parametrize("log_omega", [math.nan, math.inf, -math.inf])
def test_a_non_finite_log_omega_gets_the_least_weight(log_omega: float) -> None:
    assert clamp_weight(log_omega, 5.0) == math.exp(-5.0)
    assert clamp_weight(log_omega, 2.0) == math.exp(-2.0)


def test_the_release_is_inside_the_clipping_ball() -> None:
    """Under DP, without noise (z = 0), ||N_k|| <= a_k C for any step, however large, and
    ``clipped`` says whether the step was scaled down."""
    privacy = Privacy(epsilon=3.0, clip=0.7, weights="omega", log_omega_range=4.0)
    gen = _generator(1)
    scales = [1e-6, 1e-2, 0.05, 0.1, 0.3, 1.0, 10.0, 1e3, 1e8, 1e30, 1e100]
    seen = {True: 0, False: 0}
    for trial in range(400):
        scale = scales[trial % len(scales)]
        theta, mu = _model(gen, scale), _model(gen, scale)
        log_omega = float(torch.empty(()).uniform_(-8.0, 2.0, generator=gen))
        a = clamp_weight(log_omega, privacy.log_omega_range)
        out = release(theta, mu, log_omega, privacy, 0.0, gen)
        norm = delta_norm(theta, mu)
        assert out.norm == pytest.approx(norm, rel=1e-12)
        assert out.clipped == (norm > privacy.clip)
        assert _norm(out.numerator) <= a * privacy.clip + 1e-9, (scale, norm, a)
        if out.clipped:  # on the sphere of radius a C, not inside it
            assert _norm(out.numerator) == pytest.approx(a * privacy.clip, rel=1e-9)
        else:  # untouched but for the weight
            for k in theta:
                torch.testing.assert_close(out.numerator[k], a * (theta[k] - mu[k]))
        assert out.denominator == a
        seen[out.clipped] += 1
    assert min(seen.values()) > 50  # both branches were exercised


def test_a_float32_release_is_inside_the_ball_to_float32_rounding() -> None:
    privacy = Privacy(epsilon=3.0, clip=1.0, weights="omega")
    gen = _generator(2)
    for scale in (0.01, 1.0, 1e4, 1e30):
        theta, mu = _model(gen, scale, torch.float32), _model(gen, scale, torch.float32)
        out = release(theta, mu, -1.0, privacy, 0.0, gen)
        assert all(v.dtype == torch.float32 for v in out.numerator.values())
        assert _norm(out.numerator) <= math.exp(-1.0) * (1 + 1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_step_is_not_released_outside_the_ball(bad: float) -> None:
    """A site whose training diverged must not send a NaN release: NaN is not inside the ball of
    radius a_k C the accountant assumes (whether a site diverged is itself data-dependent), and
    one NaN N_k makes the summed prior NaN for every site, unattributably under CKKS. Refusing it
    (ValueError at the site) or releasing something finite inside the ball both satisfy this."""
    privacy = Privacy(epsilon=3.0, weights="omega", clip=1.0)
    theta = {"w": torch.tensor([bad, 1.0, 2.0])}
    mu = {"w": torch.zeros(3)}
    try:
        out = release(theta, mu, -1.0, privacy, 0.0, _generator(12))
    except ValueError:
        return
    assert all(bool(torch.isfinite(v).all()) for v in out.numerator.values()), out
    assert _norm(out.numerator) <= math.exp(-1.0) * privacy.clip + 1e-9


def test_without_dp_nothing_is_clipped() -> None:
    """Secure aggregation alone: C bounds no sensitivity, so the step goes as it is."""
    privacy = Privacy(clip=0.1, weights="omega", secure_aggregation="ckks")
    gen = _generator(11)
    theta, mu = _model(gen, 10.0), _model(gen, 10.0)
    out = release(theta, mu, -0.5, privacy, 0.0, gen)
    assert out.norm > 100 * privacy.clip and not out.clipped
    for k in theta:
        torch.testing.assert_close(out.numerator[k], math.exp(-0.5) * (theta[k] - mu[k]))


def test_the_numerator_noise_has_std_z_c_and_mean_zero() -> None:
    """N_k - a_k clip(Delta_k) over 200,000 coordinates: the sample std is z C to 5 standard
    errors (the std of a sample std is about sigma / sqrt(2 n)), the mean 0 to 5 sigma / sqrt(n)."""
    z, clip, log_omega = 0.8, 0.5, -1.5
    privacy = Privacy(epsilon=3.0, clip=clip, weights="omega")
    gen = _generator(3)
    theta = {"w": torch.randn(400, 400, generator=gen), "b": torch.randn(40_000, generator=gen)}
    mu = {k: torch.zeros_like(v) for k, v in theta.items()}
    out = release(theta, mu, log_omega, privacy, z, gen)
    a = clamp_weight(log_omega, privacy.log_omega_range)
    factor = clip_factor(delta_norm(theta, mu), clip)
    assert factor < 1e-2  # the step was clipped hard, so the noise is what is left
    noise = torch.cat(
        [(out.numerator[k].double() - a * factor * theta[k].double()).reshape(-1) for k in theta]
    )
    n = noise.numel()
    assert n == 200_000
    sigma = z * clip
    std, mean = float(noise.std()), float(noise.mean())
    assert abs(std / sigma - 1) < SIGMAS / math.sqrt(2 * n), std
    assert abs(mean) < SIGMAS * sigma / math.sqrt(n), mean
    # Gaussian, not merely of the right variance: the fourth moment is 3 sigma^4 (std of the
    # sample kurtosis about sqrt(24 / n))
    kurtosis = float(((noise - mean) ** 4).mean()) / std**4
    assert abs(kurtosis - 3) < SIGMAS * math.sqrt(24 / n), kurtosis


def test_the_denominator_noise_has_std_z() -> None:
    z, log_omega = 0.6, -0.7
    privacy = Privacy(epsilon=3.0, weights="omega")
    a = clamp_weight(log_omega, privacy.log_omega_range)
    gen = _generator(4)
    theta = {"w": torch.ones(2)}
    mu = {"w": torch.zeros(2)}
    draws = torch.tensor(
        [release(theta, mu, log_omega, privacy, z, gen).denominator - a for _ in range(20_000)],
        dtype=torch.float64,
    )
    n = draws.numel()
    assert abs(float(draws.std()) / z - 1) < SIGMAS / math.sqrt(2 * n)
    assert abs(float(draws.mean())) < SIGMAS * z / math.sqrt(n)


def test_no_noise_at_z_zero() -> None:
    privacy = Privacy(weights="omega", clip=100.0)
    gen = _generator(5)
    theta, mu = _model(gen, 1.0), _model(gen, 1.0)
    out = release(theta, mu, -0.5, privacy, 0.0, gen)
    assert out.denominator == math.exp(-0.5)
    for k in theta:
        torch.testing.assert_close(out.numerator[k], math.exp(-0.5) * (theta[k] - mu[k]))


def test_equal_weights_send_a_denominator_of_exactly_one() -> None:
    privacy = Privacy(epsilon=3.0)  # weights: auto is equal under DP
    assert privacy.weighting == "equal"
    gen = _generator(6)
    theta = {"w": torch.full((50_000,), 1e-3)}
    mu = {"w": torch.zeros(50_000)}
    for log_omega in (-3.0, 0.0, math.nan):
        out = release(theta, mu, log_omega, privacy, 1.3, gen)
        assert out.denominator == 1.0
        residual = out.numerator["w"].double() - 1e-3  # a_k = 1: the step is not weighted down
        assert abs(float(residual.std()) / 1.3 - 1) < SIGMAS / math.sqrt(2 * 50_000)


def test_the_noise_follows_the_generator() -> None:
    privacy = Privacy(epsilon=3.0, weights="omega")
    theta, mu = {"w": torch.ones(10)}, {"w": torch.zeros(10)}
    one = release(theta, mu, -1.0, privacy, 1.0, _generator(7))
    two = release(theta, mu, -1.0, privacy, 1.0, _generator(7))
    other = release(theta, mu, -1.0, privacy, 1.0, _generator(8))
    assert torch.equal(one.numerator["w"], two.numerator["w"])
    assert one.denominator == two.denominator
    assert not torch.equal(one.numerator["w"], other.numerator["w"])


def test_floor() -> None:
    assert floor(Privacy(epsilon=1.0), 4) == 4.0
    assert floor(Privacy(weights="omega", log_omega_range=3.0), 4) == pytest.approx(
        4 * math.exp(-3.0)
    )


def test_private_mean_without_noise_is_the_omega_weighted_mean() -> None:
    """mu + sum a_k (theta_k - mu) / sum a_k = sum a_k theta_k / sum a_k = softmax(log omega)."""
    privacy = Privacy(weights="omega", clip=1e6)
    gen = _generator(9)
    mu = _model(gen, 1.0)
    thetas = [_model(gen, 1.0) for _ in range(4)]
    log_omegas = [-0.1, -2.0, -4.5, -0.9]
    releases = [
        release(t, mu, lo, privacy, 0.0, gen) for t, lo in zip(thetas, log_omegas, strict=True)
    ]
    numerator, denominator = sum_releases(releases)
    out = private_mean(mu, numerator, denominator, 4, privacy)
    w = torch.softmax(torch.tensor(log_omegas, dtype=torch.float64), 0)
    assert denominator == pytest.approx(sum(math.exp(v) for v in log_omegas), rel=1e-12)
    for k in mu:
        expected = sum(float(w[i]) * thetas[i][k] for i in range(4))
        torch.testing.assert_close(out[k], expected, rtol=1e-12, atol=1e-12)


def test_private_mean_equal_weights_divides_by_the_count() -> None:
    privacy = Privacy(epsilon=3.0)
    mu = {"w": torch.zeros(3)}
    numerator = {"w": torch.tensor([3.0, 6.0, -9.0])}
    out = private_mean(mu, numerator, 123.0, 3, privacy)  # a sent denominator is ignored
    torch.testing.assert_close(out["w"], torch.tensor([1.0, 2.0, -3.0]))


def test_private_mean_floors_a_noisy_denominator() -> None:
    privacy = Privacy(epsilon=3.0, weights="omega", log_omega_range=2.0)
    mu = {"w": torch.zeros(2, dtype=torch.float64)}
    numerator = {"w": torch.tensor([1.0, -1.0], dtype=torch.float64)}
    least = 5 * math.exp(-2.0)
    for denominator in (-3.0, 0.0, 1e-9, least / 2):
        out = private_mean(mu, numerator, denominator, 5, privacy)
        torch.testing.assert_close(out["w"], numerator["w"] / least)
    out = private_mean(mu, numerator, 4.0, 5, privacy)
    torch.testing.assert_close(out["w"], numerator["w"] / 4.0)


def test_noise_variance() -> None:
    z, clip = 0.5, 2.0
    equal = Privacy(epsilon=3.0, clip=clip)
    assert noise_variance(equal, z, 4, 999.0) == pytest.approx((z * clip) ** 2 * 4 / 16)
    omega = Privacy(epsilon=3.0, clip=clip, weights="omega", log_omega_range=1.0)
    assert noise_variance(omega, z, 4, 2.0) == pytest.approx((z * clip) ** 2 * 4 / 4)
    assert noise_variance(omega, z, 4, -1.0) == pytest.approx(
        (z * clip) ** 2 * 4 / (4 * math.exp(-1.0)) ** 2
    )
    assert noise_variance(omega, 0.0, 4, 2.0) == 0.0


def test_noise_variance_is_the_variance_of_the_mean() -> None:
    """tau^2 is what the noise adds to mu': over many rounds of K sites with equal weights."""
    z, clip, sites = 0.9, 0.4, 5
    privacy = Privacy(epsilon=3.0, clip=clip)
    gen = _generator(10)
    mu = {"w": torch.zeros(40_000, dtype=torch.float64)}
    theta = {"w": torch.zeros(40_000, dtype=torch.float64)}
    releases = [release(theta, mu, 0.0, privacy, z, gen) for _ in range(sites)]
    numerator, denominator = sum_releases(releases)
    out = private_mean(mu, numerator, denominator, sites, privacy)["w"]
    tau2 = noise_variance(privacy, z, sites, denominator)
    assert abs(float(out.var()) / tau2 - 1) < SIGMAS * math.sqrt(2 / out.numel())


def test_sum_releases() -> None:
    one = Release({"w": torch.tensor([1.0, 2.0])}, 0.5, False, 0.1)
    two = Release({"w": torch.tensor([3.0, -1.0])}, 0.25, True, 9.0)
    numerator, denominator = sum_releases([one, two])
    assert numerator["w"].dtype == torch.float64
    torch.testing.assert_close(numerator["w"], torch.tensor([4.0, 1.0], dtype=torch.float64))
    assert denominator == 0.75
    assert torch.equal(one.numerator["w"], torch.tensor([1.0, 2.0]))  # not summed in place
    with pytest.raises(ValueError, match="no release"):
        sum_releases([])
