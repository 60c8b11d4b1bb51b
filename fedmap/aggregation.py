"""Server-side aggregation: normalised weights and the weighted mean of site parameters."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Aggregate:
    """What ``StreamingMean`` gathered: the weighted mean and the spread a learned prior needs."""

    mean: Params
    """gamma = sum_k w_k theta_k in each entry's own dtype (integer buffers: the first site's)."""
    weights: dict[str, float]
    """w_k by site, in the order the sites were added."""
    second: dict[str, Tensor]
    """sum_k w_k (theta_kj - gamma_j)^2 per tracked tensor: float64, flat."""
    sampled: dict[str, Tensor]
    """theta_k at each tracked tensor's chosen entries: float64, one row per site in order."""


class StreamingMean:
    """gamma = sum_k softmax(log omega)_k theta_k (eq. 9) one site at a time, in O(model) memory.

    An online softmax: with l_k = log omega_k (or log N_k for ``weighting="samples"``) it keeps the
    running maximum m = max_k l_k and S = sum_k exp(l_k - m), rescaling S by exp(m_old - m_new)
    when a larger l arrives, so no exponential overflows or underflows to 0/0 whatever the l_k
    (+-1e4 included). The tensors are kept already normalised, as the running weighted mean
    gamma and, for the tensors in ``moments``, the running weighted variance V = sum_k w_k
    (theta_k - gamma)^2 (West's weighted Welford update): with r = exp(l - m_new) / S_new the new
    site's share of the sites so far and delta = theta - gamma,

        gamma <- gamma + r delta,    V <- (1 - r) (V + r delta^2),

    so a site's weight never multiplies a whole tensor by an exponential. Everything accumulates
    in float64: one copy of each tensor (two for a tracked one) however many sites are added. For
    ``samples`` (a fixed set of entry indices per tensor) the values theta_k at those entries are
    also kept, one small row per site (O(sites x entries), what the ICNN prior's fit looks at).

    The weights agree with ``omega_weights`` / ``sample_weights`` and the mean with
    ``weighted_average`` to rounding, in any order of sites; the same errors are raised: NaN or
    +inf log omega when the site is added, every site at -inf when the result is asked for.
    """

    def __init__(
        self,
        weighting: Weighting = "omega",
        moments: Collection[str] = (),
        samples: Mapping[str, Tensor] | None = None,
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.weighting: Weighting = weighting
        self.moments = frozenset(moments)
        self.samples = dict(samples or {})
        self._log_weights: dict[str, float] = {}
        self._max = -math.inf
        self._total = 0.0
        self._mean: dict[str, Tensor] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self._variance: dict[str, Tensor] = {}
        self._rows: dict[str, list[Tensor]] = {name: [] for name in self.samples}

    def __len__(self) -> int:
        return len(self._log_weights)

    def add(self, site: str, params: Params, log_omega: float, num_examples: int) -> None:
        """Fold one site's theta_k in; params may be dropped as soon as this returns."""
        if site in self._log_weights:
            raise ValueError(f"site {site} was already added")
        logw = self._log_weight(site, log_omega, num_examples)
        if self._log_weights and set(params) != set(self._mean):
            raise ValueError(f"site {site} sends keys {sorted(params)}, not {sorted(self._mean)}")
        for name in self.samples:
            flat = params[name].detach().reshape(-1)
            self._rows[name].append(flat[self.samples[name]].to(torch.float64))
        first = not self._log_weights
        self._log_weights[site] = logw
        if first:
            for name, value in params.items():
                self._dtypes[name] = value.dtype
                if value.is_floating_point():
                    zeros = torch.zeros(value.shape, dtype=torch.float64, device=value.device)
                    self._mean[name] = zeros
                    if name in self.moments:
                        self._variance[name] = torch.zeros_like(zeros).reshape(-1)
                else:
                    self._mean[name] = value.detach().clone()
        if logw == -math.inf:
            return  # weight 0: it moves nothing
        if logw > self._max:
            self._total *= math.exp(self._max - logw)
            self._max = logw
        share = math.exp(logw - self._max)
        self._total += share
        r = share / self._total
        for name, acc in self._mean.items():
            if not acc.is_floating_point():
                continue
            delta = params[name].detach().to(torch.float64, copy=True).sub_(acc)
            acc.add_(delta, alpha=r)
            if name in self._variance:
                var = self._variance[name]
                var.add_(delta.reshape(-1).square(), alpha=r).mul_(1.0 - r)

    def _log_weight(self, site: str, log_omega: float, num_examples: int) -> float:
        if self.weighting == "samples":
            if isinstance(num_examples, bool) or num_examples <= 0:
                raise ValueError(f"sample counts must be positive, got {num_examples} ({site})")
            return math.log(num_examples)
        if math.isnan(log_omega) or log_omega == math.inf:
            raise ValueError(f"log omega is NaN or +inf for site(s) {site}")
        return float(log_omega)

    def weights(self) -> dict[str, float]:
        """w_k = exp(l_k - m) / S by site, in the order added."""
        if not self._log_weights:
            raise ValueError("cannot aggregate zero site updates")
        if self._total == 0.0:
            names = ", ".join(self._log_weights)
            raise ValueError(f"log omega is -inf for every site ({names})")
        return {k: math.exp(v - self._max) / self._total for k, v in self._log_weights.items()}

    def result(self) -> Aggregate:
        """The aggregate of the sites added so far, the mean in each entry's own dtype."""
        weights = self.weights()
        mean = {name: acc.to(self._dtypes[name], copy=True) for name, acc in self._mean.items()}
        sampled = {name: torch.stack(rows) for name, rows in self._rows.items()}
        second = {name: var.clone() for name, var in self._variance.items()}
        return Aggregate(mean, weights, second, sampled)
