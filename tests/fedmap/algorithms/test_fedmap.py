"""FedMAP: omega-weighted server step, per-layer variances, the local update, and the learned
priors (mean plus ``prior/`` state, normalised omega, a federation with each prior)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from fedmap.aggregation import weighted_average
from fedmap.algorithms import FedMAP, SiteContext, SiteUpdate, build_algorithm
from fedmap.data import SiteData
from fedmap.models import build_model
from fedmap.objective import gaussian_prior_penalty
from fedmap.params import get_params
from fedmap.priors import prior_mean, split_prior
from fedmap.simulator import SimulationConfig, simulate
from fedmap.training import LocalTraining

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


# --- learned priors ------------------------------------------------------------------------------


def _model_updates(n: int = 3) -> list[SiteUpdate]:
    """Updates of a real MLP's keys (model order), spread around one point."""
    base = get_params(build_model("mlp", 5))
    gen = torch.Generator().manual_seed(11)
    return [
        SiteUpdate(
            f"site-0{k + 1}",
            1,
            {key: v + 0.3 * torch.randn(v.shape, generator=gen) for key, v in base.items()},
            20 * (k + 1),
            log_omega=-0.1 * k,
        )
        for k in range(n)
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prior": "laplace"}, "prior"),
        ({"min_variance": 0.0}, "min_variance"),
        ({"min_variance": math.inf}, "min_variance"),
        ({"icnn_alpha": -1.0}, "icnn_alpha"),
        ({"icnn_width": 0}, "icnn_width"),
        ({"icnn_steps": 2.5}, "icnn_steps"),
        ({"icnn_samples": True}, "icnn_samples"),
    ],
)
def test_rejects_bad_prior_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedMAP(**kwargs)


def test_build_algorithm_passes_prior_options() -> None:
    algo = build_algorithm(
        "fedmap", {"prior": "icnn", "min_variance": 0.5, "icnn_width": 4, "icnn_steps": 7}
    )
    assert isinstance(algo, FedMAP)
    assert (algo.prior, algo.min_variance, algo.icnn_width, algo.icnn_steps) == ("icnn", 0.5, 4, 7)
    assert FedMAP().prior == "gaussian"


def test_gaussian_aggregate_sends_the_mean_alone() -> None:
    updates = _model_updates()
    out = FedMAP().aggregate(updates, {})
    assert split_prior(out)[1] == {}
    w = FedMAP().weights(updates)
    expected = weighted_average([u.params for u in updates], w)
    assert all(torch.equal(out[k], expected[k]) for k in expected)


@pytest.mark.parametrize("prior", ["diagonal", "icnn"])
def test_learned_aggregate_is_mean_plus_state(prior: str) -> None:
    updates = _model_updates()
    algo = FedMAP(prior=prior, min_variance=0.01, icnn_steps=20)  # type: ignore[arg-type]
    out = algo.aggregate(updates, {})
    mean, state = split_prior(out)
    gaussian = FedMAP().aggregate(updates, {})
    assert set(mean) == set(gaussian)
    assert all(torch.equal(mean[k], gaussian[k]) for k in mean)  # mu is the same omega-mean
    fitted = {k.split("/")[1] for k in state}
    # every tensor but the input layer (input_variance = inf) gets a prior of its own
    assert fitted == set(mean) - {"body.0.weight", "body.0.bias"}
    assert all(k.startswith("prior/") and v.is_floating_point() for k, v in state.items())
    # the model loads the mean, and the next round's fit warm-starts from this state
    build_model("mlp", 5).load_state_dict(prior_mean(out), strict=True)
    again = algo.aggregate(updates, out)
    assert set(again) == set(out)


@pytest.mark.parametrize("prior", ["diagonal", "icnn"])
def test_learned_local_update_uses_the_normalised_density(
    prior: str, make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    site = make_context(data, seed=2)
    algo = FedMAP(prior=prior, min_variance=0.05, icnn_steps=20)  # type: ignore[arg-type]
    init = get_params(site.build_model())
    updates = [
        SiteUpdate(s, 1, {k: v + 0.1 * i * torch.ones_like(v) for k, v in init.items()}, 64)
        for i, s in enumerate(("a", "b", "c"))
    ]
    broadcast = algo.aggregate(updates, init)
    cold = FedMAP(prior=prior, warm_start=False, min_variance=0.05)  # type: ignore[arg-type]
    for method in (algo, cold):  # cold starts load prior_mean(broadcast) into the model
        result = method.local_update(site, broadcast, init, round_=2)
        u = result.update
        nll, r = u.metrics["train_nll"], u.metrics["prior_penalty"]
        log_norm = u.metrics["prior_log_normaliser"]
        assert math.isfinite(log_norm) and log_norm != 0.0
        assert u.log_omega == pytest.approx(-nll - (r + log_norm) / 64, rel=1e-12)
        assert not any(k.startswith("prior/") for k in u.params)


@pytest.mark.parametrize("prior", ["gaussian", "diagonal", "icnn"])
def test_each_prior_runs_a_federation(prior: str, make_site: Callable[..., SiteData]) -> None:
    sites = [make_site(f"site-0{k + 1}", n=96, d=4, seed=k) for k in range(3)]
    config = SimulationConfig(rounds=3, training=LocalTraining(batch_size=32))
    algo = FedMAP(prior=prior, icnn_steps=30)  # type: ignore[arg-type]
    result = simulate(algo, sites, config, seed=1)
    accuracies = [result.final[s]["accuracy"] for s in result.sites]
    assert all(math.isfinite(a) for row in result.history for a in row)
    assert np.mean(accuracies) > 0.8  # separable sites: every prior learns them
