"""FedMAP (Algorithm 1) with a Gaussian (v1), learned diagonal Gaussian or separable ICNN prior.

Site k keeps theta_k and, each round, minimises mean NLL - log rho(theta) from where it stopped,
then sends (theta_k, log omega_k). The server sets mu = sum_k w_k theta_k with w = softmax(log
omega), the minimiser of -sum_k w_k log rho(theta_k) over the mean (eq. 9), and for a learned
prior then fits the prior's own state to the theta_k with the same weights (``fedmap.priors``).
The broadcast prior is mu plus ``prior/...`` entries (none for the Gaussian). Unlike the authors'
public code, the weights really are omega: sample counts are only an ablation switch
(``weighting="samples"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fedmap.aggregation import (
    WEIGHTINGS,
    StreamingMean,
    Weighting,
    omega_weights,
    sample_weights,
    weighted_average,
)
from fedmap.algorithms.common import fit
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.models import input_layer_keys
from fedmap.objective import dataset_nll, log_omega
from fedmap.params import Params, get_params, trainable
from fedmap.priors import (
    PRIOR_NAMES,
    DiagonalPrior,
    GaussianPrior,
    ICNNPrior,
    Prior,
    PriorName,
    prior_mean,
    split_prior,
)


@dataclass(frozen=True)
class FedMAP:
    """Personalised FL by MAP estimation under a learned prior."""

    variance: float = 1.0
    """sigma^2 of the Gaussian prior (the authors' configuration used 15; see docs/results). For a
    learned prior, the variance of every tensor until the first fit (round 1)."""
    input_variance: float | None = math.inf
    """sigma^2 of the input layer; None means ``variance``. A large value lets each site keep its
    own input layer, the layer that absorbs a site-specific feature shift (+inf: not penalised,
    and for a learned prior not fitted either). Ignored for single-layer models, whose input
    layer is the whole model."""
    weighting: Weighting = "omega"
    warm_start: bool = True
    """Start each round from the site's own theta_k (True) or from the prior mean (False)."""
    prior: PriorName = "gaussian"
    """gaussian: fixed sigma^2 (v1); diagonal: learned sigma_j^2 per parameter; icnn: learned
    separable convex prior per tensor (v2, with a normaliser). See ``fedmap.priors``."""
    min_variance: float = 1.0
    """Learned priors: -log rho is never more curved than under N(mu, min_variance) (diagonal:
    sigma_j^2 >= min_variance). The floor that keeps them from collapsing: the site deviations
    they are fitted to are shrunk by the prior itself (docs/results/priors.md). At or above
    1 / (2 pi) the density stays below 1 per coordinate, so log omega_k stays <= 0."""
    icnn_alpha: float = 0.1
    """Strong convexity alpha/2 u^2 of the ICNN in standardised units u = (theta - mu) / s."""
    icnn_width: int = 8
    icnn_steps: int = 100
    """L-BFGS iterations of the server's ICNN fit per tensor (it stops earlier when converged)."""
    icnn_samples: int = 1024
    """Entries per tensor the ICNN fit looks at (the same random subset at every site)."""
    name: str = field(default="fedmap", init=False)
    model: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"FedMAP weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}"
            )
        for label, value in (("variance", self.variance), ("input_variance", self.input_variance)):
            if value is not None and value <= 0:
                raise ValueError(f"FedMAP {label} must be positive, got {value}")
        if self.prior not in PRIOR_NAMES:
            raise ValueError(
                f"FedMAP prior must be one of {', '.join(PRIOR_NAMES)}, got {self.prior!r}"
            )
        for label, positive in (
            ("min_variance", self.min_variance),
            ("icnn_alpha", self.icnn_alpha),
        ):
            if not (positive > 0 and math.isfinite(positive)):
                raise ValueError(f"FedMAP {label} must be positive and finite, got {positive}")
        for label, count in (
            ("icnn_width", self.icnn_width),
            ("icnn_steps", self.icnn_steps),
            ("icnn_samples", self.icnn_samples),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"FedMAP {label} must be a positive integer, got {count!r}")

    def family(self, variances: Mapping[str, float]) -> Prior:
        """The prior family named by ``prior``, over tensors with these configured variances."""
        if self.prior == "diagonal":
            return DiagonalPrior(variances, self.min_variance)
        if self.prior == "icnn":
            return ICNNPrior(
                variances,
                self.min_variance,
                self.icnn_alpha,
                self.icnn_width,
                self.icnn_steps,
                self.icnn_samples,
            )
        return GaussianPrior(variances)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        start = personal if self.warm_start else prior_mean(prior)
        rho = self.family(self.variances(site.build_model().state_dict()))

        def penalty(theta: dict[str, Tensor]) -> Tensor:
            return rho.penalty(theta, prior)

        model = fit(site, start, penalty)
        d = site.data
        nll = dataset_nll(model, d.x_train, d.y_train)
        live = trainable(model)
        r = float(penalty(live).detach())
        theta = get_params(model)
        metrics = {"train_nll": nll, "prior_penalty": r}
        if self.prior != "gaussian":
            # omega_k under the normalised density: -log rho = R + log normaliser
            log_norm = rho.log_normaliser(live, prior)
            metrics["prior_log_normaliser"] = log_norm
            r += log_norm
        update = SiteUpdate(
            d.name, round_, theta, d.num_train, log_omega(nll, r, d.num_train), metrics
        )
        return LocalResult(update, theta)

    def variances(self, state: Mapping[str, Tensor]) -> dict[str, float]:
        """sigma_j^2 for each tensor j of the model.

        state must be in the model's own state-dict order (its first entry is the input layer);
        a dict decoded from a file may come in any order.
        """
        first = input_layer_keys(state)
        if self.input_variance is None or first == frozenset(state):
            return dict.fromkeys(state, self.variance)
        inner = self.input_variance
        return {k: (inner if k in first else self.variance) for k in state}

    def weights(self, updates: Sequence[SiteUpdate]) -> Tensor:
        """w_k: softmax(log omega) (eq. 9), or N_k / N for the sample-count ablation."""
        if self.weighting == "omega":
            return omega_weights([u.log_omega for u in updates], [u.site for u in updates])
        return sample_weights([u.num_examples for u in updates])

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        """mu = sum_k w_k theta_k, plus the learned prior's state fitted with the same w_k.

        The tensors left out of the fit are found from the first update's keys, which must list the
        input layer first (a model's state-dict order, or sorted order for the models here).
        """
        weights = self.weights(updates)
        thetas = [u.params for u in updates]
        mean = weighted_average(thetas, weights)
        if self.prior == "gaussian":
            return mean
        rho = self.family(self.variances(thetas[0]))
        return {**mean, **rho.fit(thetas, weights, mean, split_prior(prior)[1])}

    def stream(self, template: Params, weighting: Weighting | None = None) -> StreamingMean:
        """An accumulator for ``aggregate`` that takes the updates one at a time (``add``), in
        O(model) memory: it gathers mu and what the prior's fit needs (``Prior.needs``).

        template is the first update's parameters, in the order ``aggregate`` needs of them.
        ``weighting`` overrides the method's (the server passes "omega" with log w_k already
        formed and capped, ``fedmap.server.aggregate_round``).
        """
        needs = self.family(self.variances(template)).needs(template)
        return StreamingMean(weighting or self.weighting, needs.moments, needs.entries)

    def aggregate_stream(self, stream: StreamingMean, prior: Params) -> Params:
        """``aggregate`` of the updates added to stream (one made by ``stream``): the same prior,
        to rounding, in any order of the updates."""
        done = stream.result()
        if self.prior == "gaussian":
            return done.mean
        rho = self.family(self.variances(done.mean))  # mean keeps the first update's key order
        weights = torch.tensor(list(done.weights.values()), dtype=torch.float64)
        state = split_prior(prior)[1]
        return {
            **done.mean,
            **rho.fit_spread(done.second, done.sampled, weights, done.mean, state),
        }

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return personal
