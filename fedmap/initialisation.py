"""Algorithm 1, line 1: one randomly chosen site's freshly initialised model seeds gamma and
every theta_k, so all sites start from the same point."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fedmap.params import Params, get_params
from fedmap.priors import prior_mean


@dataclass(frozen=True)
class Initialisation:
    seed_site: str
    prior: Params
    personal: dict[str, Params]


def initialise(
    build_model: Callable[[], nn.Module], sites: Sequence[str], seed: int
) -> Initialisation:
    """Pick a site uniformly with seed; its model (initialised under seed) seeds gamma and theta_k.

    Torch's global generator is forked, so calling this leaves the caller's random state as it was.
    """
    if not sites:
        raise ValueError("a federation needs at least one site")
    seed_site = random.Random(seed).choice(list(sites))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        params = get_params(build_model())
    personal = {s: {k: v.clone() for k, v in params.items()} for s in sites}
    return Initialisation(seed_site, params, personal)


def warm_start(
    prior: Params, sites: Sequence[str], source: str = "released prior"
) -> Initialisation:
    """A run that starts from a released prior instead of line 1 of Algorithm 1: gamma is that
    prior's mean mu (a learned prior's ``prior/...`` state is left behind) and every theta_k
    starts at mu, which is what a federation's scheduled retraining does
    (``site_tasks.centre.server``: round 1's prior is the registry champion's mean, and a site
    with no state of its own in the new run starts from it). ``source`` names it in place of a
    seed site."""
    if not sites:
        raise ValueError("a federation needs at least one site")
    mean = prior_mean(prior)
    personal = {s: {k: v.clone() for k, v in mean.items()} for s in sites}
    return Initialisation(source, {k: v.clone() for k, v in mean.items()}, personal)
