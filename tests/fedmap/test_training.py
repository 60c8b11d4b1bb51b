"""Local training: minibatch Adam on mean NLL plus a penalty."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedmap.data import SiteData
from fedmap.models import LogisticRegression, build_model
from fedmap.objective import dataset_nll, gaussian_prior_penalty
from fedmap.params import get_params
from fedmap.training import LocalTraining, train_local

CONFIG = LocalTraining(epochs=5, batch_size=32, lr=1e-2)


def _max_move(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> float:
    return max(float((params[k] - anchor[k]).abs().max()) for k in anchor)


def test_reduces_nll_on_separable_problem(make_site: Callable[..., SiteData]) -> None:
    data = make_site(n=128)
    model = build_model("mlp", data.num_features)
    before = dataset_nll(model, data.x_train, data.y_train)
    train_local(model, data.x_train, data.y_train, CONFIG, torch.Generator().manual_seed(0))
    after = dataset_nll(model, data.x_train, data.y_train)
    assert before > 0.5
    assert after < 0.1 * before


def test_huge_penalty_keeps_params_at_anchor(make_site: Callable[..., SiteData]) -> None:
    data = make_site(n=128)
    model = build_model("mlp", data.num_features)
    anchor = get_params(model)
    free = build_model("mlp", data.num_features)
    free.load_state_dict(anchor)
    train_local(free, data.x_train, data.y_train, CONFIG, torch.Generator().manual_seed(0))

    def penalty(theta: dict[str, torch.Tensor]) -> torch.Tensor:
        return gaussian_prior_penalty(theta, anchor, 1e-8)

    train_local(
        model, data.x_train, data.y_train, CONFIG, torch.Generator().manual_seed(0), penalty
    )
    free_move, pinned_move = (
        _max_move(get_params(free), anchor),
        _max_move(get_params(model), anchor),
    )
    assert free_move > 0.1
    assert pinned_move < 0.02
    assert pinned_move < 0.1 * free_move


def test_deterministic_given_generator_seed(make_site: Callable[..., SiteData]) -> None:
    data = make_site(n=96)

    def run(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mlp", data.num_features)
        train_local(model, data.x_train, data.y_train, CONFIG, torch.Generator().manual_seed(seed))
        return get_params(model)

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_epochs_override(make_site: Callable[..., SiteData]) -> None:
    data = make_site(n=64)
    torch.manual_seed(0)
    start = get_params(build_model("mlp", data.num_features))

    def run(config: LocalTraining, epochs: int | None) -> dict[str, torch.Tensor]:
        model = build_model("mlp", data.num_features)
        model.load_state_dict(start)
        train_local(
            model,
            data.x_train,
            data.y_train,
            config,
            torch.Generator().manual_seed(0),
            epochs=epochs,
        )
        return get_params(model)

    two = run(LocalTraining(epochs=2, batch_size=16), None)
    override = run(LocalTraining(epochs=1, batch_size=16), 2)
    one = run(LocalTraining(epochs=1, batch_size=16), None)
    assert all(torch.equal(two[k], override[k]) for k in two)
    assert any(not torch.equal(two[k], one[k]) for k in two)


def test_single_row_last_batch_is_skipped(make_site: Callable[..., SiteData]) -> None:
    data = make_site(n=65)  # 64 + a last batch of one row, which BatchNorm cannot take
    model = build_model("mlp-bn", data.num_features)
    train_local(model, data.x_train, data.y_train, LocalTraining(batch_size=64), torch.Generator())
    assert int(model.state_dict()["body.1.num_batches_tracked"]) == 1


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": -1e-3}])
def test_invalid_settings_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid local training"):
        LocalTraining(**kwargs)  # type: ignore[arg-type]


def test_reduces_cox_nll_on_survival_data() -> None:
    """Exponential times with hazard exp(2 x_0), about 43% of the rows censored: minibatch Cox
    training of a one-output linear model lowers the full-data NLL (seed 0: 2.687 -> 2.177) and
    finds the true coefficients (1.99, -0.01, -0.13 against 2, 0, 0)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    event_time = rng.exponential(1.0 / np.exp(2.0 * x[:, 0]))
    censor_time = rng.exponential(2.0, 200)
    y = np.column_stack([np.minimum(event_time, censor_time), event_time <= censor_time])
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    model = LogisticRegression(3)
    with torch.no_grad():
        model.head.weight.zero_()
    before = dataset_nll(model, xt, yt)
    train_local(model, xt, yt, LocalTraining(epochs=10, batch_size=32, lr=0.05), torch.Generator())
    after = dataset_nll(model, xt, yt)
    assert after < before - 0.3
    weight = model.head.weight.detach().ravel()
    assert float(weight[0]) > 1.5 and float(weight[1:].abs().max()) < 0.5


def test_the_cosine_schedule_runs_from_lr_to_lr_final() -> None:
    from fedmap.training import cosine_lr

    rates = [cosine_lr(0.01, 0.001, t, 15) for t in range(1, 16)]
    assert rates[0] == 0.01 and rates[-1] == 0.001
    assert rates[7] == pytest.approx(0.0055)  # half way: the mean of the two
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert cosine_lr(0.01, 0.001, 16, 15) == 0.001  # a tier-2 site's fine-tuning after the last
    assert cosine_lr(0.01, 0.001, 1, 1) == 0.01  # a one-round run


def test_a_round_s_settings_are_constant_and_none_decay_without_lr_final() -> None:
    constant = LocalTraining(epochs=2, batch_size=32, lr=0.01)
    assert constant.at(7, 15) is constant
    decaying = LocalTraining(epochs=2, batch_size=32, lr=0.01, lr_final=0.001)
    last = decaying.at(15, 15)
    assert (last.lr, last.lr_final, last.epochs, last.batch_size) == (0.001, None, 2, 32)
    assert last.at(1, 15) is last  # a round's settings do not decay again
    for bad in (0.0, -1e-3, 0.02):
        with pytest.raises(ValueError, match="lr_final"):
            LocalTraining(lr=0.01, lr_final=bad)
