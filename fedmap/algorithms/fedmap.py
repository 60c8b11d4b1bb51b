"""FedMAP with a Gaussian prior (v1, Algorithm 1).

Site k keeps theta_k and, each round, minimises mean NLL + ||theta - gamma||^2 / (2 sigma^2) from
where it stopped, then sends (theta_k, log omega_k). The server sets gamma = sum_k w_k theta_k with
w = softmax(log omega), the closed-form minimiser of -sum_k w_k log rho_gamma(theta_k) (eq. 9).
Unlike the authors' public code, the weights really are omega: sample counts are only an ablation
switch (``weighting="samples"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from fedmap.aggregation import (
    WEIGHTINGS,
    Weighting,
    omega_weights,
    sample_weights,
    weighted_average,
)
from fedmap.algorithms.common import fit
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.models import input_layer_keys
from fedmap.objective import dataset_nll, gaussian_prior_penalty, log_omega
from fedmap.params import Params, get_params, trainable


@dataclass(frozen=True)
class FedMAP:
    """Personalised FL by MAP estimation under a learned Gaussian prior."""

    variance: float = 1.0
    """sigma^2 of the Gaussian prior (the authors' configuration used 15; see docs/results)."""
    input_variance: float | None = math.inf
    """sigma^2 of the input layer; None means ``variance``. A large value lets each site keep its
    own input layer, the layer that absorbs a site-specific feature shift (+inf: not penalised).
    Ignored for single-layer models, whose input layer is the whole model."""
    weighting: Weighting = "omega"
    warm_start: bool = True
    """Start each round from the site's own theta_k (True) or from gamma (False)."""
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

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        start = personal if self.warm_start else prior

        variances = self.variances(site.build_model().state_dict())

        def penalty(theta: dict[str, Tensor]) -> Tensor:
            return gaussian_prior_penalty(theta, prior, variances)

        model = fit(site, start, penalty)
        d = site.data
        nll = dataset_nll(model, d.x_train, d.y_train)
        r = float(penalty(trainable(model)).detach())
        theta = get_params(model)
        metrics = {"train_nll": nll, "prior_penalty": r}
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
        return weighted_average([u.params for u in updates], self.weights(updates))

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return personal

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return personal
