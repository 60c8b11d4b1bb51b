"""A learned convex function of one real variable: the building block of the separable ICNN prior.

f_psi(u) = sum_i v_i softplus(sum_j W_ij softplus(a_j u + b_j) + c_i u + d_i) + (alpha / 2) u^2

is an input-convex neural network (ICNN, v2 of the paper) on a scalar: the first layer (a, b) and
the pass-through (c, d) are unconstrained affine maps of u, the weights that act on hidden units
(W, v) are non-negative and softplus is convex and non-decreasing, so f is convex in u, and the
alpha/2 u^2 term makes it alpha-strongly convex. exp(-f) / Z is then a log-concave density on R
whose normaliser Z = int exp(-f(u)) du is a 1-D integral that ``log_normaliser`` computes by
quadrature to a relative error below ``TAIL``.

Every weight is a bounded image of an unconstrained raw tensor (tanh or sigmoid), so:

- |f'(u) - alpha u| <= SLOPE_BOUND and 0 < alpha <= f''(u) <= curvature_bound(alpha) for every psi;
- the density is at most sqrt(C / 2 pi) anywhere (C = curvature_bound(alpha)), so the fit loss
  -sum_k w_k mean_j log rho(u_kj) is bounded below by -1/2 log(C / 2 pi) whatever the data;
- the family is the continuous image of a compact box, so that bound is an infimum the loss
  attains (Weierstrass): the fit has a minimum. The authors' fit (no normaliser, a free output
  bias) has neither: it lowers f at the site points without limit.

Raw parameters travel as plain float tensors named by ``PARAM_NAMES``; width H is their length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

SLOPE_MAX = 3.0
"""|a_j| and |c_i| are at most this (in units of the standardised deviation u)."""
BIAS_MAX = 20.0
"""|b_j| and |d_i| are at most this, so a kink sits anywhere in |u| <= BIAS_MAX / |a_j|."""
SLOPE_BOUND = 2.0 * SLOPE_MAX
"""sup |f'(u) - alpha u| over the whole family: sum_i v_i (sum_j W_ij |a_j| + |c_i|), rows of W and
v summing to at most 1."""
TAIL = 1e-8
"""Relative mass of exp(-f) that the quadrature grid may leave out."""
PARAM_NAMES = ("in_slope", "in_bias", "hidden", "skip", "hidden_bias", "out")


@dataclass(frozen=True)
class Weights:
    """The constrained weights of f: a, b, c, d bounded; W, v non-negative with rows summing <= 1."""

    in_slope: Tensor
    in_bias: Tensor
    hidden: Tensor
    skip: Tensor
    hidden_bias: Tensor
    out: Tensor


def curvature_bound(alpha: float) -> float:
    """C = alpha + 5/4 SLOPE_MAX^2 >= f''(u) for every psi and u.

    softplus'' <= 1/4 and softplus' <= 1, so z_j = softplus(a_j u + b_j) has z_j'' <= a_j^2 / 4,
    the second layer's pre-activation p_i has |p_i'| <= 2 SLOPE_MAX and p_i'' <= SLOPE_MAX^2 / 4,
    and softplus(p_i)'' <= p_i'^2 / 4 + p_i'' <= 5/4 SLOPE_MAX^2; v sums to at most 1.
    """
    return alpha + 1.25 * SLOPE_MAX**2


def initial_raw(width: int, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """A deterministic start: kinks spread over |u| <= 2 with slopes of alternating sign.

    No random draw, so a fit that starts here repeats exactly; distinct biases break the symmetry
    between hidden units.
    """
    if width < 1:
        raise ValueError(f"ICNN width must be at least 1, got {width}")
    spread = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(width)], dtype=torch.float64)
    slope = torch.atanh(signs / SLOPE_MAX)  # a_j = +-1
    bias = torch.atanh(2.0 * spread / BIAS_MAX)  # b_j in [-2, 2]
    raw = {
        "in_slope": slope,
        "in_bias": bias,
        "hidden": torch.zeros(width, width, dtype=torch.float64),
        "skip": torch.atanh(-0.5 * spread / SLOPE_MAX),
        "hidden_bias": torch.atanh(spread / BIAS_MAX),
        "out": torch.zeros(width, dtype=torch.float64),
    }
    return {k: v.to(dtype) for k, v in raw.items()}


def constrain(raw: Mapping[str, Tensor]) -> Weights:
    """Map unconstrained raw tensors onto the compact family (tanh for a, b, c, d; sigmoid / H for
    W and v, so W_ij, v_i lie in (0, 1/H) and each row sums to less than 1)."""
    missing = sorted(set(PARAM_NAMES) - set(raw))
    if missing:
        raise ValueError(f"ICNN parameters missing: {', '.join(missing)}")
    width = raw["out"].shape[0]
    return Weights(
        in_slope=SLOPE_MAX * torch.tanh(raw["in_slope"]),
        in_bias=BIAS_MAX * torch.tanh(raw["in_bias"]),
        hidden=torch.sigmoid(raw["hidden"]) / width,
        skip=SLOPE_MAX * torch.tanh(raw["skip"]),
        hidden_bias=BIAS_MAX * torch.tanh(raw["hidden_bias"]),
        out=torch.sigmoid(raw["out"]) / width,
    )


def icnn_value(weights: Weights, u: Tensor, alpha: float) -> Tensor:
    """f_psi(u), elementwise over a tensor u of any shape (the value has u's shape)."""
    x = u.unsqueeze(-1)
    z1 = F.softplus(x * weights.in_slope + weights.in_bias)
    z2 = F.softplus(z1 @ weights.hidden.T + x * weights.skip + weights.hidden_bias)
    return z2 @ weights.out + 0.5 * alpha * u * u


def quadrature_grid(
    alpha: float, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> tuple[Tensor, float]:
    """Equally spaced nodes on [-U, U] and their spacing h, enough for any psi of the family.

    The minimiser u* of f obeys |u*| <= SLOPE_BOUND / alpha (f' = alpha u + g', |g'| <= L). With
    C = curvature_bound(alpha), alpha-strong convexity gives f(u) >= f(u*) + alpha/2 (u - u*)^2 and
    f'' <= C gives Z >= exp(-f(u*)) sqrt(2 pi / C), so the mass beyond U = L / alpha + r is at
    most sqrt(C / alpha) exp(-alpha r^2 / 2) Z: r is chosen to make that TAIL. The spacing is a
    quarter of the narrowest possible width 1 / sqrt(C); the trapezoid rule on a smooth, fast
    decaying integrand is then exact to far below TAIL.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    c = curvature_bound(alpha)
    r = math.sqrt(2.0 / alpha * math.log(math.sqrt(c / alpha) / TAIL))
    half = SLOPE_BOUND / alpha + r
    h = 0.25 / math.sqrt(c)
    n = math.ceil(half / h)
    return torch.arange(-n, n + 1, dtype=dtype, device=device) * h, h


def log_normaliser(raw: Mapping[str, Tensor], alpha: float) -> Tensor:
    """log Z_psi = log int exp(-f_psi(u)) du by the trapezoid rule on ``quadrature_grid``, in
    float64 and through log-sum-exp (the tails beyond the grid are below TAIL relative)."""
    grid, h = quadrature_grid(alpha, device=raw["out"].device)
    weights = constrain({k: v.to(torch.float64) for k, v in raw.items()})
    return torch.logsumexp(-icnn_value(weights, grid, alpha), dim=0) + math.log(h)


def fit_loss(raw: Mapping[str, Tensor], u: Tensor, weights: Tensor, alpha: float) -> Tensor:
    """L(psi) = sum_k w_k mean_j f_psi(u_kj) + log Z_psi: the omega-weighted negative
    log-likelihood of the standardised site deviations u (sites x entries), the upper-level
    problem of eq. 3/9 for this family. Bounded below by -1/2 log(C / 2 pi)."""
    if u.ndim != 2 or weights.shape != (u.shape[0],):
        raise ValueError(
            f"u must be sites x entries and weights one per site: {u.shape}, {weights.shape}"
        )
    values = icnn_value(constrain(raw), u, alpha).mean(dim=1)
    return torch.dot(weights.to(values.dtype), values) + log_normaliser(raw, alpha)


def fit(
    u: Tensor,
    weights: Tensor,
    alpha: float,
    init: Mapping[str, Tensor],
    steps: int,
) -> dict[str, Tensor]:
    """argmin_psi fit_loss by L-BFGS (strong Wolfe line search) from init, in float64.

    At most ``steps`` iterations; it stops earlier once the gradient or the change in loss is
    negligible. Runs on u's device; returns raw parameters in init's dtype.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    u64 = u.detach().to(torch.float64)
    w64 = weights.detach().to(u.device, torch.float64)
    raw = {
        k: init[k].detach().to(u.device, torch.float64).clone().requires_grad_(True)
        for k in PARAM_NAMES
    }
    optimiser = torch.optim.LBFGS(
        list(raw.values()),
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = fit_loss(raw, u64, w64, alpha)
        torch.autograd.backward(loss)
        return loss.detach()

    optimiser.step(closure)  # type: ignore[no-untyped-call]
    dtype = init[PARAM_NAMES[0]].dtype
    return {k: v.detach().to(dtype) for k, v in raw.items()}
