"""The local MAP objective of FedMAP and the weight omega_k each site sends with its update."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedmap.survival import cox_partial_nll


def gaussian_prior_penalty(
    theta: Mapping[str, Tensor],
    gamma: Mapping[str, Tensor],
    variance: float | Mapping[str, float],
) -> Tensor:
    """R(theta) = -log rho_gamma(theta) + const = sum_j ||theta_j - gamma_j||^2 / (2 sigma_j^2).

    The Gaussian prior of eq. 7 (v1), summed over every tensor j of theta (gamma must hold the same
    keys). variance is one sigma^2 for all tensors, or a sigma_j^2 per tensor name; a tensor whose
    variance is +inf is not penalised. The same function is FedProx's proximal term
    (mu/2)||theta - theta_g||^2 with sigma^2 = 1/mu, and Ditto's (lambda/2)||v - w||^2 with
    sigma^2 = 1/lambda.
    """
    total = torch.zeros((), device=next(iter(theta.values())).device)
    for name, value in theta.items():
        var = variance if isinstance(variance, float | int) else variance[name]
        if var <= 0:
            raise ValueError(f"prior variance of {name!r} must be positive, got {var}")
        if math.isinf(var):
            continue
        total = total + torch.sum((value - gamma[name]) ** 2) / (2.0 * var)
    return total


def mean_nll(output: Tensor, y: Tensor) -> Tensor:
    """(1/N) sum_i l(y_i, phi(x_i; theta)), the data term of the local objective (eq. 2), by task.

    binary, y of shape (N,): l is the binary cross-entropy on the logits ``output``.
    survival, y of shape (N, 2) holding (time, event): the Cox negative log partial likelihood of
    the log relative risks ``output`` with Breslow ties, divided by N, all rows of the batch
    (``fedmap.survival.cox_partial_nll``; FLamby's TCGA-BRCA loss also divides by all rows). Either
    way N times the value is the whole negative log-likelihood, so log omega_k (eq. 8, below)
    stays a per-sample geometric mean. A survival batch without events gives 0.
    """
    if y.ndim == 2 and y.shape[1] == 2:
        return cox_partial_nll(output, y[:, 0], y[:, 1])
    if y.ndim != 1:
        raise ValueError(
            f"y must have shape (N,) (binary) or (N, 2) (survival), got {tuple(y.shape)}"
        )
    return F.binary_cross_entropy_with_logits(output, y)


def map_objective(output: Tensor, y: Tensor, penalty: Tensor) -> Tensor:
    """The lower-level problem at site k (eq. 2/7): mean NLL + R(theta)."""
    return mean_nll(output, y) + penalty


def log_omega(mean_nll_value: float, penalty: float, num_examples: int) -> float:
    """log omega_k = -mean NLL(theta_k on Z_k) - R(theta_k) / N_k.

    omega_k = P(Z_k | theta_k) rho_gamma(theta_k) (eq. 8) taken as a per-sample geometric mean, so
    it never underflows: the N_k-fold product is replaced by its N_k-th root in log space.
    R is the unnormalised penalty (the reference code's convention): the Gaussian's normalising
    constant (d/2) log(2 pi sigma^2) is left out, which shifts log omega_k by that constant / N_k.
    """
    if num_examples <= 0:
        raise ValueError(f"num_examples must be positive, got {num_examples}")
    return -mean_nll_value - penalty / num_examples


def dataset_nll(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Mean NLL of the model on a whole split, in evaluation mode (survival: the Cox risk sets
    span the whole split)."""
    model.eval()
    with torch.no_grad():
        return float(mean_nll(model(x), y))
