"""Server-side aggregation: normalised weights and the weighted mean of site parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from fedmap.params import Params

Weighting = Literal["omega", "samples"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)


def omega_weights(log_omegas: Sequence[float], sites: Sequence[str] | None = None) -> Tensor:
    """w_k = omega_k / sum_j omega_j = softmax(log omega)_k, computed by log-sum-exp.

    Works in float64 and subtracts the maximum before exponentiating, so log omegas of -1e4 or
    +1e4 neither underflow to 0/0 nor overflow. A site whose log omega is -inf gets weight 0;
    NaN, +inf, or every site at -inf is an error naming the sites.
    """
    names = list(sites) if sites is not None else [f"#{i}" for i in range(len(log_omegas))]
    if not log_omegas:
        raise ValueError("cannot aggregate zero site updates")
    logw = torch.tensor(list(log_omegas), dtype=torch.float64)
    bad = [names[i] for i in range(len(logw)) if torch.isnan(logw[i]) or logw[i] == float("inf")]
    if bad:
        raise ValueError(f"log omega is NaN or +inf for site(s) {', '.join(bad)}")
    if torch.isneginf(logw).all():
        raise ValueError(f"log omega is -inf for every site ({', '.join(names)})")
    return torch.softmax(logw, dim=0)


def sample_weights(num_examples: Sequence[int]) -> Tensor:
    """w_k = N_k / sum_j N_j (FedAvg's weighting; FedMAP's ablation switch)."""
    counts = torch.tensor(list(num_examples), dtype=torch.float64)
    if len(counts) == 0 or (counts <= 0).any():
        raise ValueError(f"sample counts must be positive, got {list(num_examples)}")
    return counts / counts.sum()


def weighted_average(params: Sequence[Params], weights: Tensor) -> Params:
    """gamma = sum_k w_k theta_k, entry by entry (the server step under a Gaussian prior, eq. 9).

    Every site must send the same keys. Integer buffers (BatchNorm's batch counter) are taken from
    params[0]. Sums run in float64 and are cast back to each entry's dtype.
    """
    if len(params) != len(weights):
        raise ValueError(f"{len(params)} parameter sets but {len(weights)} weights")
    if not torch.isclose(weights.sum(), torch.ones((), dtype=weights.dtype)):
        raise ValueError(f"weights must sum to 1, got {float(weights.sum())}")
    out: Params = {}
    for name, first in params[0].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for w, p in zip(weights.tolist(), params, strict=True):
            acc += w * p[name].to(torch.float64)
        out[name] = acc.to(first.dtype)
    return out
