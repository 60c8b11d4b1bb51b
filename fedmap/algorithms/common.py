"""Pieces the methods share: fit a model at a site, package its update, average updates."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fedmap.aggregation import sample_weights, weighted_average
from fedmap.algorithms.protocol import SiteContext, SiteUpdate
from fedmap.objective import dataset_nll
from fedmap.params import Params
from fedmap.training import Penalty, train_local


def fit(
    site: SiteContext, start: Params, penalty: Penalty | None = None, epochs: int | None = None
) -> nn.Module:
    """Train a copy of start on the site's training split and return the trained model."""
    model = site.model_from(start)
    d = site.data
    train_local(model, d.x_train, d.y_train, site.training, site.generator, penalty, epochs)
    return model


def update_from(
    site: SiteContext, round_: int, model: nn.Module, sent: Params, log_omega: float = 0.0
) -> SiteUpdate:
    """The message a site sends: the given params plus its mean training NLL as a metric."""
    d = site.data
    nll = dataset_nll(model, d.x_train, d.y_train)
    return SiteUpdate(site.data.name, round_, sent, d.num_train, log_omega, {"train_nll": nll})


def sample_weighted_mean(updates: Sequence[SiteUpdate], prior: Params) -> Params:
    """FedAvg's server step: prior with every sent entry replaced by sum_k (N_k / N) theta_k."""
    weights = sample_weights([u.num_examples for u in updates])
    return {**prior, **weighted_average([u.params for u in updates], weights)}


def shared_part(params: Params, keep_local: frozenset[str]) -> Params:
    """The entries a site sends when it keeps keep_local at home."""
    return {k: v for k, v in params.items() if k not in keep_local}
