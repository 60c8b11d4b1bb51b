"""Algorithm 1, line 1: one site's fresh model seeds gamma and every theta_k."""

from __future__ import annotations

import pytest
import torch

from fedmap.initialisation import initialise
from fedmap.models import build_model

SITES = [f"site-{k:02d}" for k in range(1, 11)]


def _build() -> torch.nn.Module:
    return build_model("mlp", 6)


def test_personal_equal_prior_and_are_copies() -> None:
    init = initialise(_build, SITES, seed=3)
    assert init.seed_site in SITES
    assert set(init.personal) == set(SITES)
    for params in init.personal.values():
        assert set(params) == set(init.prior)
        for k, v in params.items():
            assert torch.equal(v, init.prior[k])
            assert v.data_ptr() != init.prior[k].data_ptr()  # own copy per site


def test_same_seed_same_result_and_prior_is_seeded_init() -> None:
    a, b = initialise(_build, SITES, 11), initialise(_build, SITES, 11)
    assert a.seed_site == b.seed_site
    assert all(torch.equal(a.prior[k], b.prior[k]) for k in a.prior)
    torch.manual_seed(11)
    reference = _build().state_dict()
    assert all(torch.equal(a.prior[k], reference[k]) for k in a.prior)
    c = initialise(_build, SITES, 12)
    assert not torch.equal(a.prior["body.0.weight"], c.prior["body.0.weight"])
    # the seed site varies with the seed
    assert len({initialise(_build, SITES, s).seed_site for s in range(20)}) > 3


def test_global_rng_state_unchanged() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    initialise(_build, SITES, 5)
    assert torch.equal(torch.get_rng_state(), before)
    after_call = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_call)


def test_no_sites_raises() -> None:
    with pytest.raises(ValueError, match="at least one site"):
        initialise(_build, [], 0)


def test_a_warm_start_begins_every_site_at_the_released_prior_s_mean() -> None:
    from fedmap.initialisation import warm_start

    released = {k: v + 1.0 for k, v in initialise(_build, SITES, 5).prior.items()}
    released["prior/extra"] = torch.zeros(2)  # a learned prior's state: gamma keeps it
    warm = warm_start(released, SITES, "fedmap-demo-prior v3")
    assert warm.seed_site == "fedmap-demo-prior v3"
    assert set(warm.prior) == set(released) - {"prior/extra"}  # gamma is mu, as the centre's
    for params in warm.personal.values():
        assert "prior/extra" not in params  # theta_k is a model: mu's keys only
        for k, v in params.items():
            assert torch.equal(v, released[k]) and v.data_ptr() != released[k].data_ptr()
    with pytest.raises(ValueError, match="at least one site"):
        warm_start(released, [])
