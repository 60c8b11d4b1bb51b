"""FedMAP under a privacy section (``PrivateFedMAP``): without noise or clipping its prior is plain
FedMAP's omega-weighted mean, in the clear and through CKKS; a site sends only (N_k, D_k) or a
ciphertext; learned priors are refused; the noise widens the prior the sites train under."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedmap import secure
from fedmap.algorithms import FedMAP, SiteContext, SiteUpdate
from fedmap.algorithms.private import (
    NeedsIndividualUpdates,
    PrivateFedMAP,
    require_gaussian,
    widened,
)
from fedmap.data import SiteData
from fedmap.dp import delta_norm, noise_variance
from fedmap.initialisation import initialise
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.privacy import Privacy
from fedmap.simulator import SimulationConfig, simulate
from fedmap.training import LocalTraining

pytestmark = pytest.mark.privacy

SITES = 3
METHOD = FedMAP(variance=1.0, input_variance=4.0)
SMALL_CLIP = 0.1
"""A clipping norm below every step of these sites (about 0.35): without DP it clips nothing."""


@pytest.fixture
def federation(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> Callable[[], tuple[list[SiteContext], Params]]:
    """Fresh contexts of three small sites (identically seeded on each call) and a prior."""
    sites = [make_site(f"site-0{k + 1}", n=64, d=4, seed=k) for k in range(SITES)]

    def make() -> tuple[list[SiteContext], Params]:
        contexts = [make_context(data, seed=10 + k) for k, data in enumerate(sites)]
        init = initialise(lambda: build_model("mlp", 4), [s.name for s in sites], seed=3)
        return contexts, init.prior

    return make


def _round(
    algorithm: FedMAP | PrivateFedMAP, contexts: list[SiteContext], prior: Params
) -> tuple[list[SiteUpdate], Params]:
    updates = [algorithm.local_update(c, prior, prior, 1).update for c in contexts]
    return updates, algorithm.aggregate(updates, prior)


def _assert_close(got: Params, want: Params, tolerance: float) -> float:
    error = max(float((got[k].double() - want[k].double()).abs().max()) for k in want)
    assert set(got) == set(want)
    assert error <= tolerance, f"max abs error {error:.3g} (tolerance {tolerance:g})"
    return error


def _plain(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> tuple[list[SiteUpdate], Params]:
    contexts, prior = federation()
    updates, mean = _round(METHOD, contexts, prior)
    r = Privacy().log_omega_range
    for u in updates:  # the case where clamping changes nothing: log omega in [-R, 0]
        assert -r <= u.log_omega <= 0, u.log_omega
        assert delta_norm(u.params, prior) > SMALL_CLIP
    equal = {k: sum(u.params[k].double() for u in updates) / SITES for k in mean}
    spread = max(float((equal[k] - mean[k].double()).abs().max()) for k in mean)
    assert spread > 1e-4  # omega weights are not equal weights, by far more than the tolerances
    return updates, mean


def test_without_noise_the_prior_is_fedmap_s(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    _, want = _plain(federation)
    contexts, prior = federation()
    algorithm = PrivateFedMAP(METHOD, Privacy(clip=SMALL_CLIP), z=0.0)
    sent, got = _round(algorithm, contexts, prior)
    _assert_close(got, want, 1e-6)
    assert algorithm.tau2 == 0.0
    for u in sent:  # N_k and D_k, nothing else the site computed
        assert set(u.params) == set(prior)
        assert (u.num_examples, u.log_omega, dict(u.metrics)) == (1, 0.0, {})
        assert u.denominator is not None and math.exp(-5.0) <= u.denominator <= 1.0
    assert algorithm.sent_bytes == SITES * (sum(v.numel() for v in prior.values()) * 4 + 8)


def test_with_secure_aggregation_the_prior_is_fedmap_s(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    _, want = _plain(federation)
    contexts, prior = federation()
    privacy = Privacy(clip=SMALL_CLIP, secure_aggregation="ckks")
    algorithm = PrivateFedMAP(METHOD, privacy, z=0.0)
    sent, got = _round(algorithm, contexts, prior)
    _assert_close(got, want, 1e-5)
    for u in sent:  # one ciphertext, and no weight in the clear
        assert set(u.params) == {secure.CIPHERTEXT}
        assert u.params[secure.CIPHERTEXT].dtype == torch.uint8
        assert (u.log_omega, u.denominator, dict(u.metrics)) == (0.0, None, {})
    assert algorithm.sent_bytes == sum(u.params[secure.CIPHERTEXT].numel() for u in sent)


def test_under_dp_the_prior_moves_by_at_most_the_clipping_norm(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    """Each clipped step has norm C, so their equal-weight mean moves mu by at most C (here by
    almost C: the sites' steps point much the same way)."""
    contexts, prior = federation()
    privacy = Privacy(epsilon=3.0, noise_multiplier=1.0, clip=SMALL_CLIP)
    _, got = _round(PrivateFedMAP(METHOD, privacy, z=0.0), contexts, prior)
    moved = delta_norm(got, prior)
    assert 0.5 * SMALL_CLIP < moved <= SMALL_CLIP + 1e-6, moved


def test_the_noise_moves_the_prior_by_tau(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    """Under DP (equal weights) the prior is the plain equal-weight mean plus noise of variance
    tau^2 = z^2 C^2 / K per coordinate, and tau^2 is what the algorithm records."""
    updates, _ = _plain(federation)
    contexts, prior = federation()
    z, clip = 0.01, 100.0
    assert all(delta_norm(u.params, prior) < clip for u in updates)  # noise, but no clipping
    privacy = Privacy(epsilon=3.0, noise_multiplier=z, clip=clip)
    algorithm = PrivateFedMAP(METHOD, privacy, z=z, seed=4)
    _, got = _round(algorithm, contexts, prior)
    tau2 = (z * clip) ** 2 / SITES
    assert algorithm.tau2 == pytest.approx(tau2, rel=1e-12)
    assert algorithm.tau2 == noise_variance(privacy, z, SITES, 0.0)
    residual = torch.cat(
        [
            (got[k].double() - sum(u.params[k].double() for u in updates) / SITES).reshape(-1)
            for k in prior
        ]
    )
    n = residual.numel()
    assert abs(float(residual.var()) / tau2 - 1) < 5 * math.sqrt(2 / n)


def test_tau2_grows_each_noisy_round(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    contexts, prior = federation()
    z = 0.5
    algorithm = PrivateFedMAP(METHOD, Privacy(epsilon=3.0, noise_multiplier=z), z=z)
    one = (z * 1.0) ** 2 * SITES / SITES**2
    _, prior = _round(algorithm, contexts, prior)
    assert algorithm.tau2 == pytest.approx(one, rel=1e-12)
    _round(algorithm, contexts, prior)
    assert algorithm.tau2 == pytest.approx(2 * one, rel=1e-12)


def test_the_sites_train_under_the_widened_prior(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    contexts, prior = federation()
    algorithm = PrivateFedMAP(METHOD, Privacy(epsilon=3.0, noise_multiplier=1.0), z=1.0)
    algorithm.tau2 = 2.5
    personal = algorithm.local_update(contexts[0], prior, prior, 2).personal
    fresh, _ = federation()
    wide = FedMAP(variance=3.5, input_variance=6.5).local_update(fresh[0], prior, prior, 2)
    narrow, _ = federation()
    plain = METHOD.local_update(narrow[0], prior, prior, 2)
    for k in prior:
        assert torch.equal(personal[k], wide.personal[k])
    assert any(not torch.equal(personal[k], plain.personal[k]) for k in prior)


def test_widened_adds_tau2_to_the_variance() -> None:
    method = FedMAP(variance=1.0, input_variance=4.0)
    wide = widened(method, 0.25)
    assert (wide.variance, wide.input_variance) == (1.25, 4.25)
    assert widened(FedMAP(input_variance=None), 0.5).input_variance is None
    assert widened(FedMAP(input_variance=math.inf), 0.5).input_variance == math.inf
    assert widened(method, 0.0) is method
    assert (method.variance, method.input_variance) == (1.0, 4.0)  # a copy, not in place


@pytest.mark.parametrize("prior", ["diagonal", "icnn"])
@pytest.mark.parametrize(
    "privacy",
    [Privacy(epsilon=3.0), Privacy(secure_aggregation="ckks")],
    ids=["dp", "secure-aggregation"],
)
def test_a_learned_prior_needs_individual_updates(prior: str, privacy: Privacy) -> None:
    method = FedMAP(prior=prior)  # type: ignore[arg-type]
    with pytest.raises(NeedsIndividualUpdates, match=f"algorithm.prior '{prior}'"):
        PrivateFedMAP(method, privacy, z=1.0)
    require_gaussian(method, Privacy())  # without a privacy section it runs


def test_sample_weighting_needs_individual_updates() -> None:
    with pytest.raises(NeedsIndividualUpdates, match="weighting: samples"):
        PrivateFedMAP(FedMAP(weighting="samples"), Privacy(epsilon=3.0), z=1.0)


def test_the_noise_repeats_with_the_seed(
    federation: Callable[[], tuple[list[SiteContext], Params]],
) -> None:
    privacy = Privacy(epsilon=3.0, noise_multiplier=1.0)
    runs = []
    for seed in (1, 1, 2):
        contexts, prior = federation()
        runs.append(_round(PrivateFedMAP(METHOD, privacy, z=1.0, seed=seed), contexts, prior)[1])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_a_private_federation_learns(make_site: Callable[..., SiteData]) -> None:
    """Three rounds of DP with secure aggregation in the simulator, at a modest noise: separable
    sites still reach high accuracy (the site keeps and is scored with its own theta_k)."""
    sites = [make_site(f"site-0{k + 1}", n=96, d=4, seed=k) for k in range(SITES)]
    privacy = Privacy(epsilon=8.0, noise_multiplier=0.5, secure_aggregation="ckks")
    algorithm = PrivateFedMAP(FedMAP(), privacy, z=0.5, seed=1)
    config = SimulationConfig(rounds=3, training=LocalTraining(batch_size=32))
    result = simulate(algorithm, sites, config, seed=1)
    assert all(math.isfinite(a) for row in result.history for a in row)
    assert np.mean([result.final[s]["accuracy"] for s in result.sites]) > 0.8
    assert algorithm.tau2 == pytest.approx(3 * 0.5**2 / SITES, rel=1e-12)
