"""The one small Protocol every federated method implements, and the messages it exchanges."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import nn

from fedmap.data import SiteData
from fedmap.params import Params
from fedmap.training import LocalTraining


@dataclass(frozen=True)
class SiteUpdate:
    """What a site sends the server after a round: parameters, omega_k and aggregate metrics."""

    site: str
    round: int
    params: Params
    num_examples: int
    log_omega: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    denominator: float | None = None
    """Under a privacy section: D_k, the site's noised weight (``fedmap.dp``); params is N_k."""


@dataclass(frozen=True)
class LocalResult:
    """A round's outcome at a site: the update it sends, and the parameters it keeps."""

    update: SiteUpdate
    personal: Params


@dataclass(frozen=True)
class SiteContext:
    """Everything local training needs at one site. Nothing here leaves the site."""

    data: SiteData
    build_model: Callable[[], nn.Module]
    training: LocalTraining
    generator: torch.Generator

    def at_round(self, round_: int, rounds: int) -> SiteContext:
        """The site as it trains in round_ of rounds: its local settings at that round's
        learning rate (``LocalTraining.at``); itself when the rate does not decay."""
        training = self.training.at(round_, rounds)
        return self if training is self.training else replace(self, training=training)

    def model_from(self, params: Params) -> nn.Module:
        """A model on the site's device holding params."""
        model = self.build_model().to(self.data.x_train.device)
        model.load_state_dict(params, strict=True)
        return model


class Algorithm(Protocol):
    """A federated method, split into what runs at a site and what runs at the server.

    ``prior`` is what the server broadcasts (FedMAP's gamma, FedAvg's global model);
    ``personal`` is what a site keeps between rounds (its own theta_k).
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str | None:
        """Model the method needs (FedBN: "mlp-bn"), or None for the federation's model."""
        ...

    def local_update(
        self, site: SiteContext, prior: Params, personal: Params, round_: int
    ) -> LocalResult: ...

    def aggregate(self, updates: Sequence[SiteUpdate], prior: Params) -> Params: ...

    def finalise(self, site: SiteContext, prior: Params, personal: Params) -> Params:
        """The site's parameters after the last round (FedAvg-FT fine-tunes here)."""
        ...

    def scoring_params(self, prior: Params, personal: Params) -> Params:
        """The parameters a site is scored with: its own model, or the global one."""
        ...
