"""FedPer: the head stays at the site; the base is the sample-weighted mean."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedmap.algorithms import FedPer, SiteContext, SiteUpdate
from fedmap.data import SiteData
from fedmap.models import build_model
from fedmap.params import get_params


def test_aggregate_keeps_head_of_prior() -> None:
    prior = {k: v + 100.0 for k, v in get_params(build_model("mlp", 6)).items()}
    sites = [{k: v + k_ for k, v in get_params(build_model("mlp", 6)).items()} for k_ in (0, 1)]
    updates = [
        SiteUpdate(f"s{i}", 1, {k: v for k, v in p.items() if not k.startswith("head.")}, n)
        for i, (p, n) in enumerate(zip(sites, (25, 75), strict=True))
    ]
    out = FedPer().aggregate(updates, prior)
    assert set(out) == set(prior)
    assert torch.equal(out["head.weight"], prior["head.weight"])
    assert torch.equal(out["head.bias"], prior["head.bias"])
    for key in ("body.0.weight", "body.2.bias"):
        expected = 0.25 * sites[0][key].double().numpy() + 0.75 * sites[1][key].double().numpy()
        np.testing.assert_allclose(out[key].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_scoring_params_merge_personal_head() -> None:
    prior = get_params(build_model("mlp", 6))
    personal = {k: v + 1.0 for k, v in prior.items()}
    merged = FedPer().scoring_params(prior, personal)
    for key in prior:
        source = personal if key.startswith("head.") else prior
        assert merged[key] is source[key]


def test_local_update_never_sends_head(
    make_site: Callable[..., SiteData], make_context: Callable[..., SiteContext]
) -> None:
    data = make_site(n=64)
    site = make_context(data)
    prior = get_params(site.build_model())
    result = FedPer().local_update(site, prior, prior, 1)
    assert set(result.update.params) == {k for k in prior if not k.startswith("head.")}
    assert set(result.personal) == set(prior)
