"""The stacked primitives the batched engine is made of, each against the one-site code it
replaces: torch.optim.Adam, train_local's shuffles and batch counts, the mean BCE."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedmap.data import SiteData
from fedmap.models import build_model
from fedmap.stacked import (
    Adam,
    Layout,
    batches_per_epoch,
    broadcast,
    concatenate,
    epoch_orders,
    forward,
    masked_bce,
    masked_cox,
    stack,
    unstack,
)
from fedmap.survival import cox_partial_nll
from fedmap.training import LocalTraining, train_local


def test_adam_matches_torch_adam_per_site_and_leaves_idle_sites_alone() -> None:
    torch.manual_seed(0)
    start = {"w": torch.randn(3, 4, 2), "b": torch.randn(3, 2)}
    layout = Layout.of(start)
    grads = [layout.flatten({k: torch.randn_like(v) for k, v in start.items()}) for _ in range(5)]
    # site 2 sits out steps 3 and 4 (its epoch ended), as a smaller site does
    active = [torch.tensor([True, True, True])] * 3 + [torch.tensor([True, True, False])] * 2
    flat = layout.flatten(start)
    adam = Adam.start(flat, lr=0.01)
    for g, on in zip(grads, active, strict=True):
        if bool(on.all()):
            flat = adam.step(flat, g)
        else:
            sites = on.nonzero().squeeze(1)
            moved = adam.step(flat.index_select(0, sites), g.index_select(0, sites), sites)
            flat = flat.index_copy(0, sites, moved)
    got = layout.views(flat)
    for k in range(3):
        live = {n: v[k].clone().requires_grad_(True) for n, v in start.items()}
        optimiser = torch.optim.Adam(list(live.values()), lr=0.01)
        for g, on in zip(grads, active, strict=True):
            if not on[k]:
                continue
            for n, p in live.items():
                p.grad = layout.views(g)[n][k].clone()
            optimiser.step()
        for n in live:
            torch.testing.assert_close(got[n][k], live[n].detach(), rtol=0, atol=1e-6)
    assert adam.steps.tolist() == [5.0, 5.0, 3.0]


def test_layout_round_trips_and_its_views_carry_gradients() -> None:
    stacked = {"a": torch.randn(2, 3, 4), "b": torch.randn(2, 5)}
    layout = Layout.of(stacked)
    flat = layout.flatten(stacked)
    assert flat.shape == (2, 17)
    for name, value in layout.views(flat).items():
        assert torch.equal(value, stacked[name])
    leaf = flat.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(layout.views(leaf)["b"].sum(), [leaf])
    assert grad[:, :12].abs().sum() == 0 and torch.equal(grad[:, 12:], torch.ones(2, 5))


@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, 129, 1400])
def test_batches_per_epoch_counts_what_train_local_trains(n: int) -> None:
    model = build_model("logreg", 2)
    steps = 0

    def counting(theta: dict[str, torch.Tensor]) -> torch.Tensor:
        nonlocal steps
        steps += 1
        return torch.zeros(())

    x, y = torch.randn(n, 2), (torch.rand(n) < 0.5).float()
    for batch in (2, 64):
        steps = 0
        train_local(model, x, y, LocalTraining(batch_size=batch), torch.Generator(), counting)
        assert batches_per_epoch([n], batch) == [steps]


def test_a_batch_size_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size >= 2"):
        LocalTraining(batch_size=1)


def test_epoch_orders_are_each_sites_own_randperm() -> None:
    sizes = [5, 3, 7]
    orders = epoch_orders(sizes, [torch.Generator().manual_seed(k) for k in range(3)])
    assert orders.shape == (3, 7)
    for k, n in enumerate(sizes):
        expected = torch.randperm(n, generator=torch.Generator().manual_seed(k))
        assert orders[k, :n].tolist() == expected.tolist()
        assert orders[k, n:].tolist() == [0] * (7 - n)


def test_masked_bce_is_each_sites_mean_over_its_real_rows() -> None:
    logits, y = torch.randn(2, 4), (torch.rand(2, 4) < 0.5).float()
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    got = masked_bce(logits, y, mask)
    torch.testing.assert_close(got[0], F.binary_cross_entropy_with_logits(logits[0], y[0]))
    torch.testing.assert_close(got[1], F.binary_cross_entropy_with_logits(logits[1, :2], y[1, :2]))


def test_rows_forward_and_unstack_give_each_sites_own_model_on_its_own_rows() -> None:
    torch.manual_seed(1)
    sites = [
        SiteData(f"s{k}", torch.randn(n, 3), torch.rand(n), torch.randn(2, 3), torch.zeros(2))
        for k, n in enumerate((4, 6))
    ]
    rows = concatenate(sites, "train")
    assert rows.x.shape == (10, 3) and rows.offsets.tolist() == [0, 4] and not rows.uniform
    y, mask = rows.padded_y
    assert mask.sum(dim=1).tolist() == [4, 6]
    assert torch.equal(y[0, :4], sites[0].y_train) and torch.equal(y[0, 4:], torch.zeros(2))
    everyone = torch.arange(2)
    x, _ = rows.take(everyone, torch.arange(6).expand(2, 6), mask)
    models = [build_model("mlp", 3) for _ in sites]
    stacked = stack([m.state_dict() for m in models])
    out = forward(build_model("mlp", 3))(stacked, x)
    for k, (model, site) in enumerate(zip(models, sites, strict=True)):
        n = site.num_train
        torch.testing.assert_close(out[k, :n], model(site.x_train), rtol=1e-5, atol=1e-6)
        for name, value in unstack(stacked, k).items():
            assert torch.equal(value, model.state_dict()[name])
    blocks = list(rows.blocks(5))  # rows 0-4 of both sites, then row 5 of the larger only
    assert [(chosen.tolist(), lo) for chosen, lo, _ in blocks] == [([0, 1], 0), ([1], 5)]
    copies = broadcast(models[0].state_dict(), 3)
    copies["head.bias"][0] += 1.0  # a copy per site: changing one leaves the others
    assert torch.equal(copies["head.bias"][1], models[0].state_dict()["head.bias"])


def test_masked_cox_is_each_sites_cox_partial_nll_over_its_real_rows() -> None:
    g = torch.Generator().manual_seed(0)
    risk = torch.randn(4, 9, generator=g)
    time = torch.randint(0, 4, (4, 9), generator=g).float()  # many tied times (Breslow)
    event = (torch.rand(4, 9, generator=g) < 0.6).float()
    sizes = [9, 5, 1, 0]
    mask = torch.arange(9).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
    got = masked_cox(risk, torch.stack([time, event], -1), mask)
    for k, n in enumerate(sizes):
        expected = cox_partial_nll(risk[k, :n], time[k, :n], event[k, :n]) if n else 0.0
        assert float(got[k]) == pytest.approx(float(expected), abs=1e-7)
