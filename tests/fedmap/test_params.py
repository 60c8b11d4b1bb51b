"""Parameters as plain name -> tensor mappings."""

from __future__ import annotations

import pytest
import torch

from fedmap.models import MLP, MLPBatchNorm
from fedmap.params import get_params, merge, num_parameters, set_params, trainable


def test_get_params_is_a_detached_copy() -> None:
    model = MLPBatchNorm(4)
    params = get_params(model)
    assert set(params) == set(model.state_dict())
    before = params["head.weight"].clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert torch.equal(params["head.weight"], before)
    assert not any(v.requires_grad for v in params.values())


def test_set_params_strict() -> None:
    model = MLP(4)
    params = {k: torch.full_like(v, 0.5) for k, v in get_params(model).items()}
    set_params(model, params)
    assert torch.equal(model.head.bias, torch.tensor([0.5]))
    params.pop("head.bias")
    with pytest.raises(RuntimeError, match=r"head\.bias"):
        set_params(model, params)


def test_merge_and_trainable() -> None:
    base = {"a": torch.zeros(1), "b": torch.zeros(1), "c": torch.zeros(1)}
    over = {"a": torch.ones(1), "b": torch.ones(1)}
    out = merge(base, over, ["b"])
    assert list(out) == ["a", "b", "c"]
    assert out["b"] is over["b"] and out["a"] is base["a"]
    model = MLPBatchNorm(4)
    live = trainable(model)
    assert "body.1.running_mean" not in live
    assert live["head.weight"] is model.head.weight
    assert num_parameters({"x": torch.zeros(2, 3), "y": torch.zeros(4)}) == 10
