"""The Gaussian mechanism a site applies to what it sends (``fedmap.privacy`` says why it is
private and how much), and the centre's mean of what the sites sent.

A site's release of round t is (N_k, D_k):

    Delta_k = theta_k - mu
    N_k = a_k clip_C(Delta_k) + N(0, s^2 C^2 I),   clip_C(x) = x min(1, C / ||x||)
    D_k = a_k + N(0, s^2),                         a_k = exp(clamp(log omega_k, -R, 0))

with s = z under DP; without DP (secure aggregation alone) nothing is clipped and s = 0. The
centre's next prior is

    mu' = mu + sum_k N_k / max(sum_k D_k, K exp(-R))

which, without noise or clipping, is sum_k a_k theta_k / sum_k a_k: eq. 9's
softmax(log omega)-weighted mean for every log omega in [-R, 0]. The floor keeps a noisy
denominator from nearing 0 or going negative (post-processing: no privacy cost).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from fedmap.params import Params
from fedmap.privacy import Privacy


@dataclass(frozen=True)
class Release:
    """What one site sends under ``privacy``: N_k (the model's keys) and D_k."""

    numerator: Params
    denominator: float
    clipped: bool
    """Whether ||Delta_k|| was above C (the site's step was scaled down)."""
    norm: float
    """||Delta_k|| before clipping: stays at the site (it is data), reported only in its log."""


def delta_norm(theta: Mapping[str, Tensor], mu: Mapping[str, Tensor]) -> float:
    """||theta - mu||_2 over every tensor of the model."""
    total = sum(float(((theta[k].double() - mu[k].double()) ** 2).sum()) for k in theta)
    return math.sqrt(total)


def clip_factor(norm: float, clip: float) -> float:
    """min(1, C / ||Delta||): the factor that puts Delta inside the ball of radius C."""
    return 1.0 if norm <= clip else clip / norm


def clamp_weight(log_omega: float, log_omega_range: float) -> float:
    """a_k = exp(clamp(log omega_k, -R, 0)), in [exp(-R), 1]."""
    value = log_omega if math.isfinite(log_omega) else -log_omega_range
    return math.exp(min(0.0, max(-log_omega_range, value)))


def release(
    theta: Mapping[str, Tensor],
    mu: Mapping[str, Tensor],
    log_omega: float,
    privacy: Privacy,
    z: float,
    generator: torch.Generator,
) -> Release:
    """(N_k, D_k) of one site: its clipped, weighted step with noise of std z C (z: the
    multiplier, 0 for none), and its weight with noise of std z (``weights: equal``: D_k = 1).

    The noise is drawn on the CPU from ``generator`` (a site's own, seeded from the OS when
    deployed) and moved to the tensors' device, so it does not depend on the device."""
    norm = delta_norm(theta, mu)
    if not math.isfinite(norm):  # a diverged site: its NaN would poison every site's prior
        raise ValueError(
            f"the step theta - mu is not finite (||theta - mu|| = {norm}); nothing is released"
        )
    factor = clip_factor(norm, privacy.clip) if privacy.dp else 1.0  # C bounds DP's sensitivity
    a = clamp_weight(log_omega, privacy.log_omega_range) if privacy.weighting == "omega" else 1.0
    sigma = z * privacy.clip
    numerator: Params = {}
    for key, value in theta.items():
        step = (value.double() - mu[key].double()) * (a * factor)
        if sigma > 0:
            noise = torch.randn(step.shape, generator=generator, dtype=torch.float64)
            step = step + sigma * noise.to(step.device)
        numerator[key] = step.to(value.dtype)
    denominator = a
    if z > 0 and privacy.weighting == "omega":
        denominator += z * float(torch.randn((), generator=generator, dtype=torch.float64))
    return Release(numerator, denominator, factor < 1.0, norm)


def floor(privacy: Privacy, sites: int) -> float:
    """The least denominator the centre divides by: K exp(-R) (K with ``weights: equal``)."""
    if privacy.weighting == "equal":
        return float(sites)
    return sites * math.exp(-privacy.log_omega_range)


def private_mean(
    mu: Mapping[str, Tensor],
    numerator: Mapping[str, Tensor],
    denominator: float,
    sites: int,
    privacy: Privacy,
) -> Params:
    """mu' = mu + sum_k N_k / max(sum_k D_k, floor), from the sums alone (``equal``: the
    denominator is the count of sites, known to the centre)."""
    if privacy.weighting == "equal":
        denominator = float(sites)
    scale = 1.0 / max(denominator, floor(privacy, sites))
    return {
        k: (mu[k].double() + numerator[k].double().to(mu[k].device) * scale).to(mu[k].dtype)
        for k in mu
    }


def noise_variance(privacy: Privacy, z: float, sites: int, denominator: float) -> float:
    """tau^2 the noise adds to each coordinate of mu' in one round: z^2 C^2 K / max(D, floor)^2
    (K sites each add N(0, z^2 C^2); the denominator's own noise is left out). Public: it
    follows from the plan and the released sum."""
    if z <= 0:
        return 0.0
    if privacy.weighting == "equal":
        denominator = float(sites)
    return (z * privacy.clip) ** 2 * sites / max(denominator, floor(privacy, sites)) ** 2


def sum_releases(releases: list[Release]) -> tuple[Params, float]:
    """sum_k N_k and sum_k D_k in the clear (what secure aggregation computes encrypted)."""
    if not releases:
        raise ValueError("no release to sum")
    total = {k: v.double().clone() for k, v in releases[0].numerator.items()}
    for r in releases[1:]:
        for k, v in r.numerator.items():
            total[k] += v.double()
    return total, float(sum(r.denominator for r in releases))
