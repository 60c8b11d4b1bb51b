"""The registry of methods and the methods without a test file of their own."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedmap.algorithms import (
    METHODS,
    PERSONALISED,
    Ditto,
    FedMAP,
    Individual,
    SiteContext,
    SiteUpdate,
    build_algorithm,
)
from fedmap.data import SiteData
from fedmap.params import get_params


def test_registry() -> None:
    assert METHODS == (
        "fedmap",
        "individual",
        "fedavg",
        "fedprox",
        "fedbn",
        "fedavg-ft",
        "ditto",
        "fedper",
    )
    assert set(METHODS) > PERSONALISED
    for name in METHODS:
        assert build_algorithm(name).name == name


def test_build_algorithm_options_and_errors() -> None:
    algo = build_algorithm("fedmap", {"variance": 2.5, "weighting": "samples"})
    assert isinstance(algo, FedMAP)
    assert (algo.variance, algo.weighting) == (2.5, "samples")
    with pytest.raises(ValueError, match="unknown method 'fedmapp'"):
        build_algorithm("fedmapp")
    with pytest.raises(ValueError, match="bogus"):
        build_algorithm("fedmap", {"bogus": 1})
    with pytest.raises(ValueError, match="known: none"):
        build_algorithm("fedavg", {"mu": 1})
    # name and model are not options
    with pytest.raises(ValueError, match="name"):
        build_algorithm("fedmap", {"name": "x"})


def test_individual_shares_nothing(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    site = make_context(data)
    prior = get_params(site.build_model())
    result = Individual().local_update(site, prior, prior, 1)
    assert result.update.params == {}
    updates = [SiteUpdate("s", 1, {}, 10)]
    assert Individual().aggregate(updates, prior) is prior
    assert Individual().scoring_params(prior, result.personal) is result.personal


def test_ditto_sends_global_keeps_personal(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    with pytest.raises(ValueError, match="lam"):
        Ditto(lam=0.0)
    data = make_site(n=64)
    site = make_context(data)
    prior = get_params(site.build_model())
    far = {k: v + 1.0 for k, v in prior.items()}
    result = Ditto(lam=0.1).local_update(site, prior, far, 1)
    assert set(result.update.params) == set(prior)
    # the sent model was trained from the prior, the personal one from `far`
    sent_dist = sum(float(((result.update.params[k] - prior[k]) ** 2).sum()) for k in prior)
    own_dist = sum(float(((result.personal[k] - prior[k]) ** 2).sum()) for k in prior)
    assert sent_dist < own_dist
    assert all(not torch.equal(result.personal[k], far[k]) for k in prior)


def test_early_stopping_keeps_the_best_round_and_spends_the_budget(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    from fedmap.algorithms import early_stopped

    site = make_context(make_site(n=64))
    start = get_params(site.build_model())
    calls: list[int] = []
    script = iter([0.6, 0.8, 0.7, 0.8, float("nan")])  # the validation score after each round

    def score(params: dict[str, torch.Tensor]) -> float:
        calls.append(1)
        return next(script)

    best = early_stopped(site, start, 5, score)
    assert len(calls) == 5  # every round of the budget is trained and scored
    assert (best.round, best.score) == (2, 0.8)  # the earliest of the tied best; NaN never wins
    assert not all(torch.equal(best.params[k], start[k]) for k in start)
    kept = early_stopped(site, start, 0, lambda p: 0.5)
    assert kept.round == 0 and all(torch.equal(kept.params[k], start[k]) for k in start)
