"""FedBN: BatchNorm stays at the site; the rest is the sample-weighted mean."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedmap.algorithms import FedBN, SiteContext, SiteUpdate
from fedmap.data import SiteData
from fedmap.models import batchnorm_keys_of, build_model
from fedmap.params import get_params


def _distinct(params: dict[str, torch.Tensor], offset: float) -> dict[str, torch.Tensor]:
    return {
        k: (v + offset if v.is_floating_point() else v + int(offset)) for k, v in params.items()
    }


def test_aggregate_leaves_prior_batchnorm_untouched() -> None:
    prior = _distinct(get_params(build_model("mlp-bn", 6)), 100.0)
    bn = batchnorm_keys_of(prior)
    assert len(bn) == 10
    sites = [_distinct(get_params(build_model("mlp-bn", 6)), float(k)) for k in range(3)]
    updates = [
        SiteUpdate(f"s{k}", 1, {key: v for key, v in p.items() if key not in bn}, n)
        for k, (p, n) in enumerate(zip(sites, (20, 30, 50), strict=True))
    ]
    out = FedBN().aggregate(updates, prior)
    assert set(out) == set(prior)
    for key in bn:
        assert torch.equal(out[key], prior[key])
    for key in set(prior) - bn:
        expected = sum(
            w * p[key].double().numpy() for w, p in zip((0.2, 0.3, 0.5), sites, strict=True)
        )
        np.testing.assert_allclose(out[key].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_scoring_params_merge_local_batchnorm() -> None:
    prior = get_params(build_model("mlp-bn", 6))
    personal = _distinct(prior, 1.0)
    merged = FedBN().scoring_params(prior, personal)
    bn = batchnorm_keys_of(prior)
    for key in prior:
        source = personal if key in bn else prior
        assert merged[key] is source[key]


def test_local_update_sends_everything_but_batchnorm(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    assert FedBN().model == "mlp-bn"
    data = make_site(n=64)
    site = make_context(data, model="mlp-bn")
    prior = get_params(site.build_model())
    result = FedBN().local_update(site, prior, prior, 1)
    bn = batchnorm_keys_of(prior)
    assert set(result.update.params) == set(prior) - bn
    assert set(result.personal) == set(prior)
    # the kept BatchNorm running statistics moved during training
    assert not torch.equal(result.personal["body.1.running_mean"], prior["body.1.running_mean"])
