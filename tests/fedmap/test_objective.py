"""The local MAP objective: the Gaussian prior term, its gradient, log omega and the full loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from fedmap.models import LogisticRegression
from fedmap.objective import (
    dataset_nll,
    gaussian_prior_penalty,
    log_omega,
    map_objective,
    mean_nll,
)
from fedmap.survival import cox_partial_nll


def _theta_gamma() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    theta = {
        "w": torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True),
        "b": torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True),
    }
    gamma = {
        "w": torch.randn(3, 4, generator=gen, dtype=torch.float64),
        "b": torch.randn(4, generator=gen, dtype=torch.float64),
    }
    return theta, gamma


@pytest.mark.parametrize("var", [0.5, 2.0, 4.0])
def test_prior_gradient_is_exactly_difference_over_variance(var: float) -> None:
    theta, gamma = _theta_gamma()
    r = gaussian_prior_penalty(theta, gamma, var)
    grads = torch.autograd.grad(r, [theta["w"], theta["b"]])
    for g, name in zip(grads, ["w", "b"], strict=True):
        expected = (theta[name] - gamma[name]).detach() / var
        # powers of two: no rounding anywhere, so the gradient is bit-identical
        assert torch.equal(g, expected)


def test_prior_gradient_with_non_dyadic_variance() -> None:
    theta, gamma = _theta_gamma()
    r = gaussian_prior_penalty(theta, gamma, 15.0)
    (g,) = torch.autograd.grad(r, [theta["w"]], retain_graph=True)
    torch.testing.assert_close(g, (theta["w"] - gamma["w"]).detach() / 15.0, rtol=1e-14, atol=0)


def test_prior_gradient_per_tensor_variance_and_infinite_variance() -> None:
    theta, gamma = _theta_gamma()
    r = gaussian_prior_penalty(theta, gamma, {"w": 0.25, "b": math.inf})
    g_w, g_b = torch.autograd.grad(r, [theta["w"], theta["b"]], allow_unused=True)
    r = r.detach()
    assert torch.equal(g_w, (theta["w"] - gamma["w"]).detach() / 0.25)
    # +inf variance: the tensor is not penalised, so no gradient reaches it
    assert g_b is None or torch.count_nonzero(g_b) == 0
    # and its value contributes nothing
    only_w = gaussian_prior_penalty({"w": theta["w"]}, {"w": gamma["w"]}, 0.25).detach()
    assert r.item() == pytest.approx(only_w.item(), rel=1e-15)


def test_prior_value_hand_computed() -> None:
    theta = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.5])}
    gamma = {"w": torch.zeros(3), "b": torch.tensor([-0.5])}
    # (1 + 4 + 9) / (2*2) + 1 / (2*2) = 3.5 + 0.25
    assert float(gaussian_prior_penalty(theta, gamma, 2.0)) == pytest.approx(3.75, abs=1e-6)
    # per tensor: 14 / (2*1) + 1 / (2*0.5) = 7 + 1
    per = gaussian_prior_penalty(theta, gamma, {"w": 1.0, "b": 0.5})
    assert float(per) == pytest.approx(8.0, abs=1e-6)
    # integer variance is accepted as a single sigma^2
    assert float(gaussian_prior_penalty(theta, gamma, 1)) == pytest.approx(7.5, abs=1e-6)
    # at theta = gamma the penalty is zero
    assert float(gaussian_prior_penalty(gamma, gamma, 3.0)) == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_prior_rejects_non_positive_variance(bad: float) -> None:
    theta = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="'w'"):
        gaussian_prior_penalty(theta, {"w": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="'w'"):
        gaussian_prior_penalty(theta, {"w": torch.zeros(2)}, {"w": bad})


def test_log_omega_formula() -> None:
    assert log_omega(0.3, 12.0, 40) == pytest.approx(-0.3 - 12.0 / 40, abs=1e-15)
    assert log_omega(0.0, 0.0, 1) == 0.0
    assert log_omega(2.5, 1000.0, 1000) == pytest.approx(-3.5, abs=1e-15)


@pytest.mark.parametrize("n", [0, -5])
def test_log_omega_rejects_non_positive_n(n: int) -> None:
    with pytest.raises(ValueError, match="num_examples"):
        log_omega(0.1, 1.0, n)


def test_mean_nll_and_map_objective_hand_computed() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0])
    y = torch.tensor([0.0, 1.0, 1.0])
    sig = torch.sigmoid
    expected_nll = (
        -(
            math.log(1 - float(sig(torch.tensor(0.0))))
            + math.log(float(sig(torch.tensor(2.0))))
            + math.log(float(sig(torch.tensor(-1.0))))
        )
        / 3
    )
    assert float(mean_nll(logits, y)) == pytest.approx(expected_nll, rel=1e-6)
    penalty = torch.tensor(0.75)
    assert float(map_objective(logits, y, penalty)) == pytest.approx(expected_nll + 0.75, rel=1e-6)


def test_map_objective_gradient_combines_data_and_prior() -> None:
    w = torch.tensor([0.3, -0.2], requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([1.0, 0.0])
    gamma = {"w": torch.tensor([1.0, 1.0])}
    loss = map_objective(x @ w, y, gaussian_prior_penalty({"w": w}, gamma, 2.0))
    (g,) = torch.autograd.grad(loss, [w])
    data_grad = x.T @ (torch.sigmoid(x @ w) - y) / 2
    torch.testing.assert_close(g, (data_grad + (w - gamma["w"]) / 2.0).detach())


def test_dataset_nll_evaluates_in_eval_mode() -> None:
    model = LogisticRegression(2)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.head.bias.fill_(0.5)
    model.train()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    expected = float(F.binary_cross_entropy_with_logits(torch.tensor([1.5, -0.5, 0.5]), y))
    assert dataset_nll(model, x, y) == pytest.approx(expected, rel=1e-6)
    assert not model.training


def test_mean_nll_of_survival_targets_is_the_cox_loss() -> None:
    risk = torch.log(torch.tensor([2.0, 1.0, 3.0, 2.0, 1.0]))
    # (time, event) rows; the Cox terms are worked out in tests/fedmap/test_survival.py
    y = torch.tensor([[1.0, 1.0], [3.0, 1.0], [3.0, 1.0], [4.0, 0.0], [2.0, 0.0]])
    assert float(mean_nll(risk, y)) == pytest.approx(math.log(54) / 5, rel=1e-6)
    torch.testing.assert_close(mean_nll(risk, y), cox_partial_nll(risk, y[:, 0], y[:, 1]))
    penalty = torch.tensor(0.25)
    assert float(map_objective(risk, y, penalty)) == pytest.approx(math.log(54) / 5 + 0.25)
    # log omega stays a per-sample geometric mean: -mean NLL - R / N
    assert log_omega(float(mean_nll(risk, y)), 1.0, 5) == pytest.approx(-math.log(54) / 5 - 0.2)


def test_mean_nll_rejects_other_target_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N,\) \(binary\) or \(N, 2\) \(survival\)"):
        mean_nll(torch.zeros(4), torch.zeros(4, 3))


def test_dataset_nll_of_survival_split_uses_every_row_in_the_risk_sets() -> None:
    model = LogisticRegression(1)
    with torch.no_grad():
        model.head.weight.fill_(1.0)
        model.head.bias.fill_(7.0)  # a common shift of every risk: no effect on the Cox loss
    x = torch.log(torch.tensor([[2.0], [1.0], [3.0], [2.0], [1.0]]))
    y = torch.tensor([[1.0, 1.0], [3.0, 1.0], [3.0, 1.0], [4.0, 0.0], [2.0, 0.0]])
    assert dataset_nll(model, x, y) == pytest.approx(math.log(54) / 5, rel=1e-6)
