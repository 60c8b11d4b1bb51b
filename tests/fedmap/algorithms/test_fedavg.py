"""FedAvg, FedProx and FedAvg-FT: the server step is the sample-weighted mean of the updates."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedmap.algorithms import FedAvg, FedAvgFineTune, FedProx, SiteContext, SiteUpdate
from fedmap.data import SiteData
from fedmap.params import get_params


def _updates() -> list[SiteUpdate]:
    gen = torch.Generator().manual_seed(3)
    return [
        SiteUpdate(
            f"site-0{k + 1}",
            1,
            {"w": torch.randn(3, 2, generator=gen), "b": torch.randn(2, generator=gen)},
            n,
            log_omega=-float(k),  # must be ignored by FedAvg
        )
        for k, n in enumerate((100, 300, 600))
    ]


def _prior() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(3, 2), "b": torch.zeros(2), "extra": torch.tensor([42.0])}


@pytest.mark.parametrize("algorithm", [FedAvg(), FedProx(mu=0.1), FedAvgFineTune(epochs=2)])
def test_aggregate_is_sample_weighted_mean(algorithm: FedAvg) -> None:
    updates = _updates()
    out = algorithm.aggregate(updates, _prior())
    for key in ("w", "b"):
        expected = sum(
            (n / 1000) * u.params[key].double().numpy()
            for u, n in zip(updates, (100, 300, 600), strict=True)
        )
        np.testing.assert_allclose(out[key].numpy(), expected, rtol=1e-6, atol=1e-7)
        # not the plain (unweighted) mean: the weighting really matters here
        plain = np.mean([u.params[key].numpy() for u in updates], axis=0)
        assert not np.allclose(out[key].numpy(), plain, atol=1e-3)
    # entries nobody sent stay as the prior had them
    assert out["extra"].item() == 42.0


def test_fedavg_scores_with_global_model() -> None:
    prior, personal = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    assert FedAvg().scoring_params(prior, personal) is prior
    assert FedProx().scoring_params(prior, personal) is prior
    assert FedAvgFineTune().scoring_params(prior, personal) is personal


def test_fedprox_rejects_non_positive_mu() -> None:
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=0.0)


def test_fedavg_local_update_starts_from_prior(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    prior = get_params(make_context(data).build_model())
    garbage = {k: v + 5.0 for k, v in prior.items()}
    a = FedAvg().local_update(make_context(data, seed=1), prior, prior, round_=3)
    b = FedAvg().local_update(make_context(data, seed=1), prior, garbage, round_=3)
    for k in prior:
        assert torch.equal(a.update.params[k], b.update.params[k])
        assert torch.equal(a.update.params[k], a.personal[k])
    assert a.update.site == "site-01"
    assert a.update.round == 3
    assert a.update.num_examples == 64
    assert set(a.update.params) == set(prior)
    assert a.update.metrics["train_nll"] > 0
    # training moved the parameters
    assert any(not torch.equal(a.update.params[k], prior[k]) for k in prior)


def test_fedprox_stays_closer_to_prior_than_fedavg(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    prior = get_params(make_context(data).build_model())

    def distance(params: dict[str, torch.Tensor]) -> float:
        return sum(float(((params[k] - prior[k]) ** 2).sum()) for k in prior)

    free = FedAvg().local_update(make_context(data, seed=1), prior, prior, 1)
    prox = FedProx(mu=1e4).local_update(make_context(data, seed=1), prior, prior, 1)
    assert distance(prox.personal) < 0.2 * distance(free.personal)
