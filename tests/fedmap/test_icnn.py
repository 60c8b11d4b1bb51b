"""The scalar ICNN: convex, normalised exactly, and a fit that is bounded below and converges."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from fedmap import icnn

ALPHA = 0.1
F64 = torch.float64


def random_raw(seed: int, width: int = 8, spread: float = 2.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v + spread * torch.randn(v.shape, generator=gen, dtype=F64)
        for k, v in icnn.initial_raw(width, F64).items()
    }


def f(raw: dict[str, torch.Tensor], u: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    return icnn.icnn_value(icnn.constrain(raw), u, alpha)


def grad_norm(raw: dict[str, torch.Tensor], u: torch.Tensor, w: torch.Tensor) -> float:
    live = {k: v.clone().requires_grad_(True) for k, v in raw.items()}
    torch.autograd.backward(icnn.fit_loss(live, u, w, ALPHA))
    return math.sqrt(sum(float((v.grad**2).sum()) for v in live.values() if v.grad is not None))


@pytest.mark.parametrize("seed", range(6))
def test_convex_along_random_segments(seed: int) -> None:
    raw = random_raw(seed, spread=3.0)
    gen = torch.Generator().manual_seed(100 + seed)
    a = (torch.rand(2000, generator=gen, dtype=F64) - 0.5) * 30
    b = (torch.rand(2000, generator=gen, dtype=F64) - 0.5) * 30
    lam = torch.rand(2000, generator=gen, dtype=F64)
    mid = f(raw, lam * a + (1 - lam) * b)
    chord = lam * f(raw, a) + (1 - lam) * f(raw, b)
    assert bool((mid <= chord + 1e-9).all())
    # strictly: alpha-strong convexity leaves at least alpha/2 lam (1 - lam) (a - b)^2 of room
    room = 0.5 * ALPHA * lam * (1 - lam) * (a - b) ** 2
    assert bool((chord - mid >= room - 1e-8).all())


@pytest.mark.parametrize("seed", range(4))
def test_curvature_and_slope_within_the_family_bounds(seed: int) -> None:
    raw = random_raw(seed, spread=4.0)
    u = torch.linspace(-15, 15, 3001, dtype=F64, requires_grad=True)
    (d1,) = torch.autograd.grad(f(raw, u).sum(), u, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), u)
    assert float(d2.min()) >= ALPHA - 1e-12
    assert float(d2.max()) <= icnn.curvature_bound(ALPHA)
    assert float((d1 - ALPHA * u).detach().abs().max()) <= icnn.SLOPE_BOUND


def test_normaliser_of_the_quadratic_case_is_closed_form() -> None:
    # v = sigmoid(-80) / H ~ 1e-36: f(u) = alpha / 2 u^2 up to nothing, so Z = sqrt(2 pi / alpha)
    raw = icnn.initial_raw(8, F64)
    raw["out"] = torch.full((8,), -80.0, dtype=F64)
    for alpha in (0.05, 0.1, 1.0):
        expected = 0.5 * math.log(2 * math.pi / alpha)
        assert float(icnn.log_normaliser(raw, alpha)) == pytest.approx(expected, abs=1e-10)


def double_exponential_integral(g: Callable[[torch.Tensor], torch.Tensor], centre: float) -> float:
    """int g(x) dx over R by the sinh-sinh (double exponential) rule x = c + sinh(pi/2 sinh t):
    nodes and weights unrelated to the equally spaced grid under test."""
    t = torch.arange(-4.0, 4.0, 1 / 256, dtype=F64)
    inner = 0.5 * math.pi * torch.sinh(t)
    x = centre + torch.sinh(inner)
    dx = 0.5 * math.pi * torch.cosh(t) * torch.cosh(inner)
    return float((g(x) * dx).sum() / 256)


@pytest.mark.parametrize("seed", range(4))
def test_normaliser_matches_an_independent_quadrature(seed: int) -> None:
    raw = random_raw(seed, spread=3.0)
    grid = torch.linspace(-100, 100, 20001, dtype=F64)
    values = f(raw, grid)
    top = float(values.min())
    centre = float(grid[values.argmin()])
    total = double_exponential_integral(lambda x: torch.exp(-(f(raw, x) - top)), centre)
    assert float(icnn.log_normaliser(raw, ALPHA)) == pytest.approx(math.log(total) - top, abs=1e-9)


def test_density_integrates_to_one_and_grid_covers_the_family() -> None:
    grid, h = icnn.quadrature_grid(ALPHA)
    assert float(grid[-1]) >= icnn.SLOPE_BOUND / ALPHA  # wider than any minimiser can sit
    for seed in range(3):
        raw = random_raw(seed)
        log_p = -f(raw, grid) - icnn.log_normaliser(raw, ALPHA)
        assert float(torch.exp(log_p).sum() * h) == pytest.approx(1.0, abs=1e-9)


def authors_style_loss(
    raw: dict[str, torch.Tensor], bias: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """The reference code's server objective: R at the site points plus a free output bias, no
    normaliser. Nothing stops it from decreasing."""
    return f(raw, u).mean() + bias


def test_fit_is_bounded_below_where_the_unnormalised_fit_is_not() -> None:
    u = torch.zeros(5, 300, dtype=F64)  # every site sent the same parameters
    w = torch.full((5,), 0.2, dtype=F64)
    floor = -0.5 * math.log(icnn.curvature_bound(ALPHA) / (2 * math.pi))
    losses = []
    raw = icnn.initial_raw(8, F64)
    for _ in range(4):
        raw = icnn.fit(u, w, ALPHA, raw, steps=50)
        losses.append(float(icnn.fit_loss(raw, u, w, ALPHA)))
    assert all(math.isfinite(x) and x >= floor for x in losses)
    assert abs(losses[-1] - losses[-2]) < 1e-6  # it has stopped moving
    # the unnormalised objective: plain gradient steps keep lowering it, by lr per step at least
    live = {k: v.clone().requires_grad_(True) for k, v in icnn.initial_raw(8, F64).items()}
    bias = torch.zeros((), dtype=F64, requires_grad=True)
    optimiser = torch.optim.SGD([*live.values(), bias], lr=0.1)
    history = []
    for _ in range(200):
        optimiser.zero_grad()
        loss = authors_style_loss(live, bias, u)
        torch.autograd.backward(loss)
        optimiser.step()
        history.append(float(loss.detach()))
    assert history[-1] < floor - 10
    assert history[-1] < history[99] - 9.0  # still falling, with no end in sight


def test_fit_converges_to_the_same_loss_from_different_starts() -> None:
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(4, 500, generator=gen, dtype=F64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    a = icnn.fit(u, w, ALPHA, icnn.initial_raw(8, F64), steps=300)
    b = icnn.fit(u, w, ALPHA, random_raw(3, spread=1.0), steps=300)
    loss_a, loss_b = float(icnn.fit_loss(a, u, w, ALPHA)), float(icnn.fit_loss(b, u, w, ALPHA))
    assert loss_a == pytest.approx(loss_b, abs=2e-3)
    # close to the differential entropy of N(0, 1), the density the data came from
    assert loss_a == pytest.approx(0.5 * math.log(2 * math.pi * math.e), abs=0.03)
    assert grad_norm(a, u, w) < 1e-4
    again = icnn.fit(u, w, ALPHA, a, steps=50)
    assert float(icnn.fit_loss(again, u, w, ALPHA)) == pytest.approx(loss_a, abs=1e-7)


def test_fit_keeps_dtype_and_validates() -> None:
    u = torch.randn(2, 10, dtype=F64)
    w = torch.tensor([0.5, 0.5], dtype=F64)
    out = icnn.fit(u, w, ALPHA, icnn.initial_raw(4), steps=3)
    assert set(out) == set(icnn.PARAM_NAMES)
    assert all(v.dtype == torch.float32 for v in out.values())
    with pytest.raises(ValueError, match="steps"):
        icnn.fit(u, w, ALPHA, icnn.initial_raw(4), steps=0)
    with pytest.raises(ValueError, match="weights"):
        icnn.fit_loss(icnn.initial_raw(4, F64), u, w[:1], ALPHA)
    with pytest.raises(ValueError, match="width"):
        icnn.initial_raw(0)
    with pytest.raises(ValueError, match="alpha"):
        icnn.quadrature_grid(0.0)
    with pytest.raises(ValueError, match="missing"):
        icnn.constrain({"out": torch.zeros(3)})
