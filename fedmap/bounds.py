"""Bounds on what any one site can do to the prior: a cap on its weight, a norm bound on its step
away from the prior, and a plausible range for its log omega.

A FedMAP site reports its own log omega_k (eq. 8), so an honest-looking but inflated value would
otherwise buy it the whole prior: w_k = softmax(log omega)_k tends to 1 as its log omega grows.
The cap bounds that share whatever it reports; the norm bound keeps one update from dragging the
mean arbitrarily far in a single round. Pure functions over floats and tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from fedmap.params import Params


def cap_weights(weights: Sequence[float], cap: float) -> list[float]:
    """Weights summing to 1 with none above ``cap``, by water-filling.

    w'_k = min(cap, lambda w_k), with lambda >= 1 the one value for which sum_k w'_k = 1: the
    capped sites get exactly ``cap`` and the others share the rest in proportion to their own
    w_k. When cap < 1/K no weights can satisfy it and every site gets 1/K (the cap is then
    1/K). Sites with w_k = 0 stay at 0, unless every site is 0 (then ValueError).
    """
    total = math.fsum(weights)
    if not weights or total <= 0 or any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite, non-negative and not all 0, got {list(weights)}")
    if not 0 < cap <= 1:
        raise ValueError(f"the weight cap must be in (0, 1], got {cap}")
    w = [x / total for x in weights]
    positive = [i for i, x in enumerate(w) if x > 0]
    limit = max(cap, 1.0 / len(positive))
    capped: set[int] = set()
    while True:
        free = [i for i in positive if i not in capped]
        left = 1.0 - limit * len(capped)
        mass = math.fsum(w[i] for i in free)
        scale = left / mass if mass > 0 else 0.0
        over = [i for i in free if w[i] * scale > limit * (1 + 1e-12)]
        if not over:
            out = [0.0] * len(w)
            for i in capped:
                out[i] = limit
            for i in free:
                out[i] = w[i] * scale
            return out
        capped.update(over)


def update_norm(theta: Params, mu: Mapping[str, torch.Tensor]) -> float:
    """||theta_k - mu||_2 over every floating-point entry of the model, in float64.

    Integer buffers (BatchNorm's counter) are left out: they are no parameters of the prior.
    """
    total = torch.zeros((), dtype=torch.float64)
    for name, value in theta.items():
        if value.is_floating_point():
            delta = value.detach().to(torch.float64) - mu[name].detach().to(torch.float64)
            total += delta.square().sum()
    return float(total.sqrt())


def log_weight(log_omega: float, num_examples: int, weighting: str) -> float:
    """The site's log of its unnormalised weight: log omega_k, or log N_k for sample weighting."""
    return log_omega if weighting == "omega" else math.log(num_examples)


def softmax(log_weights: Sequence[float]) -> list[float]:
    """w_k = exp(l_k - m) / sum_j exp(l_j - m), m = max_j l_j (log-sum-exp; -inf gives 0)."""
    m = max(log_weights)
    shares = [math.exp(x - m) if x != -math.inf else 0.0 for x in log_weights]
    total = math.fsum(shares)
    return [s / total for s in shares]
