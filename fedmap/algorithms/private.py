"""FedMAP under the federation's ``privacy`` section, in the simulator: each site releases
(N_k, D_k) with ``fedmap.dp`` (clipped, weighted and noised), optionally encrypted with
``fedmap.secure``, and the server forms mu' = mu + sum N_k / max(sum D_k, floor) from the sums.

The site keeps and is scored with its own theta_k, as in FedMAP; only the prior changes. What the
simulator runs is what a deployment runs (``site_tasks.site.train`` and
``site_tasks.centre.server`` call the same functions), so the privacy-utility table measures the
product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from fedmap import secure
from fedmap.algorithms.fedmap import FedMAP
from fedmap.algorithms.protocol import LocalResult, SiteContext, SiteUpdate
from fedmap.dp import noise_variance, private_mean, release
from fedmap.messages import specs_of
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.privacy import Privacy


class NeedsIndividualUpdates(ValueError):
    """A prior whose fit needs every site's theta_k, which privacy withholds from the centre."""


def require_gaussian(method: FedMAP, privacy: Privacy) -> None:
    """The learned priors fit their state to the individual theta_k (``fedmap.priors``): under
    DP or secure aggregation the centre has only sums, so only the Gaussian prior runs."""
    if privacy.active and method.prior != "gaussian":
        mode = "secure aggregation" if privacy.secure else "differential privacy"
        raise NeedsIndividualUpdates(
            f"algorithm.prior {method.prior!r} fits its state to each site's theta_k, which "
            f"{mode} keeps from the centre; use prior: gaussian with a privacy section (or run "
            "the learned prior without one)"
        )
    if privacy.active and method.weighting != "omega":
        raise NeedsIndividualUpdates(
            "algorithm.weighting: samples sends N_k in the clear; under a privacy section the "
            "weights are privacy.weights (omega or equal)"
        )


def widened(method: FedMAP, tau2: float) -> FedMAP:
    """FedMAP under N(mu, sigma^2 + tau^2): the prior mean is the true weighted mean plus the
    noise the sites added, of variance tau^2 per coordinate, so the prior a site trains under
    is wider by that much (the marginal of theta_k given the noisy mu). tau^2 = 0: unchanged."""
    if tau2 <= 0:
        return method
    inner = method.input_variance
    return replace(
        method,
        variance=method.variance + tau2,
        input_variance=None if inner is None else inner + tau2,
    )


@dataclass
class PrivateFedMAP:
    """The ``Algorithm`` FedMAP under ``privacy`` with noise multiplier ``z`` (0: no noise)."""

    method: FedMAP
    privacy: Privacy
    z: float
    seed: int = 0
    keys: secure.Keys | None = None
    """The sites' CKKS keys (``privacy.secure``); made on first use."""
    tau2: float = 0.0
    """The variance the noise has added so far to each coordinate of mu (``widened``)."""
    widen: bool = True
    """False: the ablation, sites train under N(mu, sigma^2) as if the noisy mean were exact
    (``tau2`` is still kept)."""
    sent_bytes: int = 0
    """Bytes of every message the sites sent so far (N_k as float32 values, or ciphertexts)."""
    name: str = field(default="fedmap", init=False)
    model: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        require_gaussian(self.method, self.privacy)
        self._noise = torch.Generator().manual_seed(10_007 * self.seed + 1)
        if self.privacy.secure and self.keys is None:
            self.keys = secure.generate()
        self._public = None if self.keys is None else secure.public_context(self.keys.public)
        self._secret = None if self.keys is None else secure.secret_context(self.keys.secret)

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult:
        tau2 = self.tau2 if self.widen else 0.0
        result = widened(self.method, tau2).local_update(site, prior, personal, round_)
        update = result.update
        out = release(
            update.params, prior_mean(prior), update.log_omega, self.privacy, self.z, self._noise
        )
        if self._public is not None:
            blob = secure.encrypt(out.numerator, out.denominator, self._public)
            self.sent_bytes += len(blob)
            message = {secure.CIPHERTEXT: secure.as_tensor(blob)}
            sent = SiteUpdate(update.site, round_, message, 1, 0.0, {}, None)
        else:
            self.sent_bytes += sum(v.numel() * 4 for v in out.numerator.values()) + 8
            sent = SiteUpdate(update.site, round_, out.numerator, 1, 0.0, {}, out.denominator)
        return LocalResult(sent, result.personal)

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params:
        mu = prior_mean(prior)
        if self._public is not None:
            assert self._secret is not None
            specs = specs_of(mu)
            blobs = (secure.from_tensor(u.params[secure.CIPHERTEXT]) for u in updates)
            total = secure.add(blobs, self._public, secure.size(specs))  # the centre
            numerator, denominator = secure.decrypt(total, self._secret, specs)  # the sites
        else:
            numerator = {k: torch.stack([u.params[k].double() for u in updates]).sum(0) for k in mu}
            denominator = sum(float(u.denominator or 0.0) for u in updates)
        self.tau2 += noise_variance(self.privacy, self.z, len(updates), denominator)
        return private_mean(mu, numerator, denominator, len(updates), self.privacy)

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        return self.method.finalise(site, prior, personal)

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        return self.method.scoring_params(prior, personal)
