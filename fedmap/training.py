"""Local optimisation at a site: minibatch Adam on mean NLL plus an optional penalty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedmap.objective import mean_nll
from fedmap.params import trainable

Penalty = Callable[[dict[str, Tensor]], Tensor]
"""A term added to the mean NLL, given the model's live parameters by name."""


@dataclass(frozen=True)
class LocalTraining:
    """How a site optimises its local objective each round."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(
                f"invalid local training settings: {self} (epochs >= 1, batch_size >= 2 since a "
                "one-row batch is skipped, lr > 0)"
            )


def train_local(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: LocalTraining,
    generator: torch.Generator,
    penalty: Penalty | None = None,
    epochs: int | None = None,
) -> None:
    """Minimise mean NLL (+ penalty) with Adam for ``config.epochs`` passes over (x, y).

    The mean NLL is the task's (``fedmap.objective.mean_nll``): binary cross-entropy for y of
    shape (N,), the Cox partial likelihood for survival targets of shape (N, 2), whose risk sets
    are then those of the minibatch, as in FLamby's TCGA-BRCA training. A fresh Adam state each
    call, as a site starts each round from what it received. Rows are shuffled by ``generator``
    (on the CPU, so runs repeat exactly whatever the device). A final batch of a single row is
    skipped, since BatchNorm cannot normalise one row (and it has no Cox risk set to compare with).
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    n = int(y.shape[0])
    for _ in range(config.epochs if epochs is None else epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 and n > 1:
                continue
            loss = mean_nll(model(x[idx]), y[idx])
            if penalty is not None:
                loss = loss + penalty(trainable(model))
            optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimiser.step()
