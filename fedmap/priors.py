"""Priors rho over a site's parameters: the fixed Gaussian of v1, a learned per-parameter
(diagonal) Gaussian, and a learned separable ICNN prior (v2, made well-posed).

A prior travels as ``Params``: the model's own keys hold the mean mu (so stripping the rest gives a
loadable state dict) and keys ``prior/<tensor>/<entry>`` hold the prior's state for that tensor:

- diagonal: ``prior/<t>/log_var`` (log sigma_j^2, t's shape);
- icnn: ``prior/<t>/scale`` (s_t, a 0-d tensor) and ``prior/<t>/icnn.<name>`` for each raw
  parameter of ``fedmap.icnn`` (``PARAM_NAMES``).

A Gaussian prior has no state. A tensor with no state (every tensor in round 1, before anything
has been fitted) falls back to N(mu, sigma_t^2) with the configured per-tensor variance; a tensor
whose configured variance is +inf (FedMAP's input layer by default) is neither penalised nor
fitted, whatever the family, so it can absorb a site's own feature shift (its mean is still
averaged). Learned priors never get sharper than N(mu, min_variance): -log rho has curvature at
most 1 / min_variance in every coordinate, the floor that stops them collapsing when the sites
start from one point and barely move apart in the first rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor

from fedmap import icnn
from fedmap.objective import gaussian_prior_penalty
from fedmap.params import Params

PriorName = Literal["gaussian", "diagonal", "icnn"]
PRIOR_NAMES: tuple[str, ...] = get_args(PriorName)
PREFIX = "prior/"
LOG_2PI = math.log(2.0 * math.pi)


def state_key(tensor: str, entry: str) -> str:
    """``prior/<tensor>/<entry>``: where the state of tensor's prior travels."""
    return f"{PREFIX}{tensor}/{entry}"


def split_prior(params: Mapping[str, Tensor]) -> tuple[Params, Params]:
    """(mean, state): the model entries mu, and the ``prior/`` entries of the prior's own state."""
    mean = {k: v for k, v in params.items() if not k.startswith(PREFIX)}
    state = {k: v for k, v in params.items() if k.startswith(PREFIX)}
    return mean, state


def prior_mean(params: Mapping[str, Tensor]) -> Params:
    """mu alone: what loads into a model (a new site's starting point)."""
    return split_prior(params)[0]


def tensor_state(state: Mapping[str, Tensor], tensor: str) -> dict[str, Tensor]:
    """The state entries of one tensor, keyed by entry name (empty when it has none)."""
    head = f"{PREFIX}{tensor}/"
    return {k.removeprefix(head): v for k, v in state.items() if k.startswith(head)}


@dataclass(frozen=True)
class Needs:
    """What a family's fit needs of the sites' theta_k beyond their weighted mean mu, so that the
    server can gather it one site at a time (``fedmap.aggregation.StreamingMean``)."""

    moments: tuple[str, ...] = ()
    """Tensors t whose weighted second moment sum_k w_k (theta_kt - mu_t)^2 the fit uses."""
    entries: Mapping[str, Tensor] = field(default_factory=dict)
    """Tensor -> the entry indices whose value at every site the fit looks at."""


class Prior(Protocol):
    """A family of priors: its site-side penalty and normaliser, and its server-side fit.

    ``prior`` is always the broadcast Params (mean plus state); theta holds the tensors a site
    optimises (a model's parameters by name).
    """

    def penalty(self, theta: Mapping[str, Tensor], prior: Params) -> Tensor:
        """R(theta) = -log rho(theta) - log_normaliser: the term of the local MAP objective (eq.
        2/7); differentiable in theta."""
        ...

    def log_normaliser(self, theta: Mapping[str, Tensor], prior: Params) -> float:
        """log of rho's normalising constant over theta's penalised tensors, so that
        R(theta) + log_normaliser = -log rho(theta) exactly (eq. 8's rho)."""
        ...

    def fit(
        self, thetas: Sequence[Params], weights: Tensor, mean: Params, previous: Params
    ) -> Params:
        """The new state: argmin -sum_k w_k log rho(theta_k) given mean mu (eq. 3/9), warm-started
        from the previous state where the family needs it."""
        ...

    def needs(self, template: Params) -> Needs:
        """What ``fit_spread`` needs of the theta_k, for models with template's entries."""
        ...

    def fit_spread(
        self,
        second: Mapping[str, Tensor],
        sampled: Mapping[str, Tensor],
        weights: Tensor,
        mean: Params,
        previous: Params,
    ) -> Params:
        """``fit`` from what ``needs`` names, gathered without holding the theta_k: second[t] the
        weighted second moment of tensor t about mu (flat, float64), sampled[t] the theta_k at its
        entries (one row per site, float64), weights the w_k in the rows' order."""
        ...


def _penalised(variances: Mapping[str, float], name: str) -> bool:
    return not math.isinf(variances[name])


def _fallback_penalty(value: Tensor, mu: Tensor, variance: float) -> Tensor:
    """||theta_t - mu_t||^2 / (2 sigma_t^2): a tensor without state (0 when sigma_t^2 = inf)."""
    if math.isinf(variance):
        return torch.zeros((), device=value.device)
    return torch.sum((value - mu) ** 2) / (2.0 * variance)


def _fallback_log_normaliser(numel: int, variance: float) -> float:
    """numel / 2 log(2 pi sigma_t^2), the Gaussian's normaliser (0 when sigma_t^2 = inf)."""
    return 0.0 if math.isinf(variance) else 0.5 * numel * (LOG_2PI + math.log(variance))


def _learnable(variances: Mapping[str, float], mean: Params) -> list[str]:
    """The tensors whose prior is fitted: floating point, with a finite configured variance."""
    return [k for k, v in mean.items() if v.is_floating_point() and _penalised(variances, k)]


def weighted_second_moment(
    thetas: Sequence[Params], weights: Tensor, mean: Params, name: str
) -> Tensor:
    """sum_k w_k (theta_kj - mu_j)^2 for every entry j of tensor name (float64, flat).

    Accumulates one site at a time, so it needs two copies of the tensor, not one per site.
    """
    mu = mean[name].detach().to(torch.float64).reshape(-1)
    total = torch.zeros_like(mu)
    for w, theta in zip(weights.tolist(), thetas, strict=True):
        total += w * (theta[name].detach().to(torch.float64).reshape(-1) - mu) ** 2
    return total


def spread(
    thetas: Sequence[Params], weights: Tensor, mean: Params, needs: Needs
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(second, sampled) for ``Prior.fit_spread`` from every theta_k at once (the batch path)."""
    second = {name: weighted_second_moment(thetas, weights, mean, name) for name in needs.moments}
    sampled = {
        name: torch.stack([t[name].detach().reshape(-1)[pick].to(torch.float64) for t in thetas])
        for name, pick in needs.entries.items()
    }
    return second, sampled


def sample_entries(numel: int, samples: int) -> Tensor:
    """At most ``samples`` entry indices out of numel, the same every call (a fixed random subset,
    so the fit is deterministic): all of them when numel <= samples."""
    if numel <= samples:
        return torch.arange(numel)
    return torch.randperm(numel, generator=torch.Generator().manual_seed(0))[:samples]


@dataclass(frozen=True)
class GaussianPrior:
    """N(gamma, sigma_t^2 I) with sigma_t^2 fixed per tensor (v1); the server fits only the mean."""

    variances: Mapping[str, float]

    def penalty(self, theta: Mapping[str, Tensor], prior: Params) -> Tensor:
        """||theta - gamma||^2 / (2 sigma^2) summed over tensors (eq. 7), as ``objective`` does."""
        return gaussian_prior_penalty(theta, prior, self.variances)

    def log_normaliser(self, theta: Mapping[str, Tensor], prior: Params) -> float:
        """0: the v1 convention keeps log omega unnormalised (``objective.log_omega``), so the
        Gaussian federation's weights stay what they always were."""
        return 0.0

    def fit(
        self, thetas: Sequence[Params], weights: Tensor, mean: Params, previous: Params
    ) -> Params:
        """Nothing beyond the mean: sigma^2 is a hyper-parameter."""
        return {}

    def needs(self, template: Params) -> Needs:
        return Needs()

    def fit_spread(
        self,
        second: Mapping[str, Tensor],
        sampled: Mapping[str, Tensor],
        weights: Tensor,
        mean: Params,
        previous: Params,
    ) -> Params:
        return {}


@dataclass(frozen=True)
class DiagonalPrior:
    """N(mu_j, sigma_j^2) per parameter j, sigma_j^2 learned; floor ``min_variance``."""

    variances: Mapping[str, float]
    min_variance: float

    def penalty(self, theta: Mapping[str, Tensor], prior: Params) -> Tensor:
        """sum_j (theta_j - mu_j)^2 / (2 sigma_j^2)."""
        mean, state = split_prior(prior)
        total = torch.zeros((), device=next(iter(theta.values())).device)
        for name, value in theta.items():
            own = tensor_state(state, name)
            if "log_var" in own and _penalised(self.variances, name):
                total = (
                    total + torch.sum((value - mean[name]) ** 2 * torch.exp(-own["log_var"])) / 2.0
                )
            else:
                total = total + _fallback_penalty(value, mean[name], self.variances[name])
        return total

    def log_normaliser(self, theta: Mapping[str, Tensor], prior: Params) -> float:
        """sum_j 1/2 log(2 pi sigma_j^2), closed form."""
        state = split_prior(prior)[1]
        total = 0.0
        for name, value in theta.items():
            own = tensor_state(state, name)
            if "log_var" in own and _penalised(self.variances, name):
                total += 0.5 * float(torch.sum(LOG_2PI + own["log_var"].to(torch.float64)))
            else:
                total += _fallback_log_normaliser(value.numel(), self.variances[name])
        return total

    def fit(
        self, thetas: Sequence[Params], weights: Tensor, mean: Params, previous: Params
    ) -> Params:
        """sigma_j^2 = max(sum_k w_k (theta_kj - mu_j)^2, min_variance): the omega-weighted MLE of
        the variance given mu (eq. 9 for this family, in closed form), floored."""
        second, sampled = spread(thetas, weights, mean, self.needs(mean))
        return self.fit_spread(second, sampled, weights, mean, previous)

    def needs(self, template: Params) -> Needs:
        """The weighted second moment of every learnable tensor: the variance streams (a running
        weighted variance), O(model) memory whatever the number of sites."""
        return Needs(tuple(_learnable(self.variances, template)))

    def fit_spread(
        self,
        second: Mapping[str, Tensor],
        sampled: Mapping[str, Tensor],
        weights: Tensor,
        mean: Params,
        previous: Params,
    ) -> Params:
        """``fit``'s closed form from the second moments alone."""
        out: Params = {}
        for name in _learnable(self.variances, mean):
            var = second[name].clamp_min(self.min_variance).reshape(mean[name].shape)
            out[state_key(name, "log_var")] = torch.log(var).to(mean[name].dtype)
        return out


@dataclass(frozen=True)
class ICNNPrior:
    """Separable ICNN prior per tensor t: -log rho(theta) = sum_j f_t(u_j) + log Z_t + log s_t with
    u_j = (theta_j - mu_j) / s_t and f_t the convex ``fedmap.icnn`` function of a scalar.

    s_t = max(sqrt(sum_k w_k mean_j (theta_kj - mu_j)^2), sqrt(C min_variance)) with C the
    family's curvature bound, so the curvature f_t'' / s_t^2 never exceeds 1 / min_variance.
    """

    variances: Mapping[str, float]
    min_variance: float
    alpha: float
    width: int
    steps: int
    samples: int

    def _scale_floor(self) -> float:
        return math.sqrt(icnn.curvature_bound(self.alpha) * self.min_variance)

    def penalty(self, theta: Mapping[str, Tensor], prior: Params) -> Tensor:
        """sum_t sum_j f_t((theta_j - mu_j) / s_t), convex in theta."""
        mean, state = split_prior(prior)
        total = torch.zeros((), device=next(iter(theta.values())).device)
        for name, value in theta.items():
            own = tensor_state(state, name)
            if "scale" in own and _penalised(self.variances, name):
                weights = icnn.constrain(_raw(own, value.dtype))
                u = (value - mean[name]) / own["scale"].to(value.dtype)
                total = total + icnn.icnn_value(weights, u, self.alpha).sum()
            else:
                total = total + _fallback_penalty(value, mean[name], self.variances[name])
        return total

    def log_normaliser(self, theta: Mapping[str, Tensor], prior: Params) -> float:
        """sum_t numel_t (log Z_t + log s_t), Z_t by quadrature (``icnn.log_normaliser``)."""
        state = split_prior(prior)[1]
        total = 0.0
        for name, value in theta.items():
            own = tensor_state(state, name)
            if "scale" in own and _penalised(self.variances, name):
                log_z = float(icnn.log_normaliser(_raw(own), self.alpha))
                total += value.numel() * (log_z + math.log(float(own["scale"])))
            else:
                total += _fallback_log_normaliser(value.numel(), self.variances[name])
        return total

    def fit(
        self, thetas: Sequence[Params], weights: Tensor, mean: Params, previous: Params
    ) -> Params:
        """Per tensor: s_t in closed form, then psi_t = argmin icnn.fit_loss on u = (theta - mu)/s_t
        (at most ``samples`` entries, the same ones for every site), warm-started from the
        previous round's psi_t."""
        second, sampled = spread(thetas, weights, mean, self.needs(mean))
        return self.fit_spread(second, sampled, weights, mean, previous)

    def needs(self, template: Params) -> Needs:
        """Per learnable tensor, its second moment (for s_t) and the ``samples`` entries the ICNN
        is fitted to. The fit is an L-BFGS over those entries' deviations from mu at every site
        at once, and mu is only known after the last site, so the server keeps each site's values
        at those entries: O(sites x samples) numbers per tensor, not O(sites x model)."""
        learnable = _learnable(self.variances, template)
        entries = {n: sample_entries(template[n].numel(), self.samples) for n in learnable}
        return Needs(tuple(learnable), entries)

    def fit_spread(
        self,
        second: Mapping[str, Tensor],
        sampled: Mapping[str, Tensor],
        weights: Tensor,
        mean: Params,
        previous: Params,
    ) -> Params:
        """``fit`` from the second moments and the sampled entries."""
        out: Params = {}
        floor = self._scale_floor()
        for name in _learnable(self.variances, mean):
            scale = max(math.sqrt(float(second[name].mean())), floor)
            pick = sample_entries(mean[name].numel(), self.samples)
            mu = mean[name].detach().reshape(-1)[pick].to(torch.float64)
            dev = sampled[name] - mu
            own = tensor_state(previous, name)
            init = _raw(own) if _fits(own, self.width) else icnn.initial_raw(self.width)
            raw = icnn.fit(dev / scale, weights, self.alpha, init, self.steps)
            dtype = mean[name].dtype
            out[state_key(name, "scale")] = torch.tensor(
                scale, dtype=dtype, device=mean[name].device
            )
            out.update({state_key(name, f"icnn.{k}"): v.to(dtype) for k, v in raw.items()})
        return out


def _raw(own: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """The raw ICNN parameters of one tensor's state (in dtype when given)."""
    return {k: own[f"icnn.{k}"].to(dtype or own[f"icnn.{k}"].dtype) for k in icnn.PARAM_NAMES}


def _fits(own: Mapping[str, Tensor], width: int) -> bool:
    """A previous psi can warm-start this fit: every raw tensor present, of this width."""
    names = {f"icnn.{k}" for k in icnn.PARAM_NAMES}
    return names <= set(own) and own["icnn.out"].shape == (width,)
