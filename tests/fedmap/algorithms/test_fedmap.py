"""FedMAP (Gaussian prior): omega-weighted server step, per-layer variances, the local update."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from fedmap.algorithms import FedMAP, SiteContext, SiteUpdate
from fedmap.data import SiteData
from fedmap.models import build_model
from fedmap.objective import gaussian_prior_penalty
from fedmap.params import get_params

LOG_OMEGAS = (-0.5, -0.2, -1.0)
COUNTS = (10, 1000, 50)


def _updates(log_omegas: tuple[float, ...] = LOG_OMEGAS) -> list[SiteUpdate]:
    gen = torch.Generator().manual_seed(5)
    return [
        SiteUpdate(
            f"site-0{k + 1}",
            1,
            {"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)},
            n,
            log_omega=lo,
        )
        for k, (lo, n) in enumerate(zip(log_omegas, COUNTS, strict=True))
    ]


def _mean(updates: list[SiteUpdate], weights: list[float], key: str) -> np.ndarray:
    rows = [w * u.params[key].double().numpy() for w, u in zip(weights, updates, strict=True)]
    return np.asarray(np.sum(rows, axis=0), dtype=np.float64)


def _softmax(values: tuple[float, ...]) -> list[float]:
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [x / sum(e) for x in e]


def test_aggregate_omega_is_softmax_weighted_mean() -> None:
    updates = _updates()
    prior = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
    out = FedMAP().aggregate(updates, prior)
    w = _softmax(LOG_OMEGAS)
    samples = [n / sum(COUNTS) for n in COUNTS]
    for key in ("w", "b"):
        np.testing.assert_allclose(out[key].numpy(), _mean(updates, w, key), rtol=1e-6, atol=1e-7)
        # omega weighting is not sample weighting (the public code's defect)
        assert not np.allclose(out[key].numpy(), _mean(updates, samples, key), atol=1e-3)


def test_aggregate_omega_extreme_log_omegas() -> None:
    updates = _updates((-1e4, -1e4 + 1, -1e4 + 2))
    out = FedMAP().aggregate(updates, {})
    w = _softmax((-1e4, -1e4 + 1, -1e4 + 2))
    for key in ("w", "b"):
        assert torch.isfinite(out[key]).all()
        np.testing.assert_allclose(out[key].numpy(), _mean(updates, w, key), rtol=1e-6, atol=1e-7)


def test_aggregate_samples_is_sample_weighted_mean() -> None:
    updates = _updates()
    out = FedMAP(weighting="samples").aggregate(updates, {})
    samples = [n / sum(COUNTS) for n in COUNTS]
    for key in ("w", "b"):
        np.testing.assert_allclose(
            out[key].numpy(), _mean(updates, samples, key), rtol=1e-6, atol=1e-7
        )


def test_aggregate_nan_log_omega_names_site() -> None:
    updates = _updates((0.0, math.nan, -1.0))
    with pytest.raises(ValueError, match="site-02"):
        FedMAP().aggregate(updates, {})


def test_variances_per_layer() -> None:
    prior = get_params(build_model("mlp", 5))
    v = FedMAP(variance=2.0, input_variance=math.inf).variances(prior)
    assert set(v) == set(prior)
    assert v["body.0.weight"] == v["body.0.bias"] == math.inf
    assert all(v[k] == 2.0 for k in prior if not k.startswith("body.0."))
    same = FedMAP(variance=3.0, input_variance=None).variances(prior)
    assert same == dict.fromkeys(prior, 3.0)
    inner = FedMAP(variance=3.0, input_variance=50.0).variances(prior)
    assert inner["body.0.weight"] == 50.0 and inner["head.weight"] == 3.0


def test_variances_single_layer_model_uses_variance() -> None:
    # logistic regression: the input layer is the whole model, so it is penalised with variance
    prior = get_params(build_model("logreg", 5))
    v = FedMAP(variance=2.0, input_variance=math.inf).variances(prior)
    assert v == {"head.weight": 2.0, "head.bias": 2.0}


@pytest.mark.parametrize("kwargs", [{"variance": 0.0}, {"variance": -1.0}, {"input_variance": 0}])
def test_rejects_non_positive_variance(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="variance"):
        FedMAP(**kwargs)


def test_rejects_unknown_weighting() -> None:
    with pytest.raises(ValueError, match="weighting"):
        FedMAP(weighting="omgea")  # type: ignore[arg-type]


def test_local_update_sends_theta_and_log_omega(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    site = make_context(data, seed=2)
    prior = get_params(site.build_model())
    personal = {k: v + 0.1 for k, v in prior.items()}
    algo = FedMAP(variance=0.5, input_variance=4.0)
    result = algo.local_update(site, prior, personal, round_=2)
    u = result.update
    assert (u.site, u.round, u.num_examples) == ("site-01", 2, 64)
    for k in prior:
        assert torch.equal(u.params[k], result.personal[k])
    nll, r = u.metrics["train_nll"], u.metrics["prior_penalty"]
    assert nll > 0 and r > 0
    assert u.log_omega == pytest.approx(-nll - r / 64, rel=1e-12)
    recomputed = gaussian_prior_penalty(result.personal, prior, algo.variances(prior))
    assert r == pytest.approx(recomputed.item(), rel=1e-5)
    assert algo.scoring_params(prior, result.personal) is result.personal


def test_warm_start_controls_starting_point(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    prior = get_params(make_context(data).build_model())
    other = {k: v + 0.5 for k, v in prior.items()}

    def run(algo: FedMAP, personal: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return algo.local_update(make_context(data, seed=4), prior, personal, 1).personal

    cold = FedMAP(warm_start=False)
    a, b = run(cold, prior), run(cold, other)
    assert all(torch.equal(a[k], b[k]) for k in prior)  # personal ignored
    warm = FedMAP(warm_start=True)
    c, d = run(warm, prior), run(warm, other)
    assert all(torch.equal(a[k], c[k]) for k in prior)  # same start when personal == prior
    assert any(not torch.allclose(c[k], d[k], atol=1e-2) for k in prior)


def test_local_update_does_not_depend_on_the_key_order_of_the_prior(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    """A prior decoded from a file may list its tensors in any order; the input layer (and so
    which tensor escapes the penalty) must still be the model's first layer."""
    data = make_site(n=64)
    prior = get_params(make_context(data).build_model())
    shuffled = dict(reversed(list(prior.items())))
    algo = FedMAP(variance=0.5, input_variance=math.inf)
    a = algo.local_update(make_context(data, seed=3), prior, prior, 1)
    b = algo.local_update(make_context(data, seed=3), shuffled, shuffled, 1)
    assert a.update.log_omega == b.update.log_omega
    for k in prior:
        assert torch.equal(a.personal[k], b.personal[k])
