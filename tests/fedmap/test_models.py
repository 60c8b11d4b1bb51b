"""Models: output shapes and the key helpers FedBN, FedPer and FedMAP rely on."""

from __future__ import annotations

import pytest
import torch

from fedmap.models import (
    MLP,
    MODEL_NAMES,
    LogisticRegression,
    MLPBatchNorm,
    batchnorm_keys_of,
    build_model,
    input_layer_keys,
    is_head_key,
    predict_proba,
)
from fedmap.params import num_parameters


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("n", [1, 7])
def test_logits_shape(name: str, n: int) -> None:
    model = build_model(name, 30)
    model.eval()  # BatchNorm in training mode cannot normalise one row
    out = model(torch.randn(n, 30))
    assert out.shape == (n,)
    prob = predict_proba(model, torch.randn(n, 30))
    assert prob.shape == (n,)
    assert ((prob > 0) & (prob < 1)).all()
    assert not prob.requires_grad


def test_build_model_types_and_sizes() -> None:
    assert isinstance(build_model("logreg", 30), LogisticRegression)
    assert isinstance(build_model("mlp", 30), MLP)
    assert isinstance(build_model("mlp-bn", 30), MLPBatchNorm)
    # 30*32+32 + 32*16+16 + 16+1
    assert num_parameters(build_model("mlp", 30).state_dict()) == 1537
    assert num_parameters(build_model("logreg", 30).state_dict()) == 31
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        build_model("cnn", 30)


def test_predict_proba_sets_eval_mode() -> None:
    model = build_model("mlp-bn", 4)
    model.train()
    x = torch.randn(5, 4)
    expected = torch.sigmoid(model.eval()(x)).detach()
    model.train()
    torch.testing.assert_close(predict_proba(model, x), expected)
    assert not model.training


def test_batchnorm_keys_of() -> None:
    state = build_model("mlp-bn", 30).state_dict()
    suffixes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = {f"body.{i}.{s}" for i in (1, 4) for s in suffixes}
    assert batchnorm_keys_of(state) == expected
    assert batchnorm_keys_of(build_model("mlp", 30).state_dict()) == frozenset()
    # works on a plain mapping of names, without building a model
    fake = {"a.weight": torch.ones(1), "bn.running_mean": torch.ones(1), "bn.weight": torch.ones(1)}
    assert batchnorm_keys_of(fake) == {"bn.running_mean", "bn.weight"}


def test_input_layer_keys() -> None:
    assert input_layer_keys(build_model("mlp", 5).state_dict()) == {"body.0.weight", "body.0.bias"}
    assert input_layer_keys(build_model("mlp-bn", 5).state_dict()) == {
        "body.0.weight",
        "body.0.bias",
    }
    assert input_layer_keys(build_model("logreg", 5).state_dict()) == {"head.weight", "head.bias"}


def test_is_head_key() -> None:
    assert is_head_key("head.weight") and is_head_key("head.bias")
    assert not is_head_key("body.0.weight")
    assert not is_head_key("header.weight")
    assert not is_head_key("body.head.weight")
    heads = {k for k in build_model("mlp", 3).state_dict() if is_head_key(k)}
    assert heads == {"head.weight", "head.bias"}
