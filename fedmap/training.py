"""Local optimisation at a site: minibatch Adam on mean NLL plus an optional penalty, with an
optional cosine decay of the learning rate over the communication rounds."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    lr_final: float | None = None
    """None: the same lr in every round. Else the learning rate decays over the rounds of a run,
    from lr in round 1 to lr_final in the last (:func:`cosine_lr`), so the models a run ends
    with are not left wherever the last large steps put them."""

    def __post_init__(self) -> None:
        bad_final = self.lr_final is not None and not (0 < self.lr_final <= self.lr)
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or bad_final:
            raise ValueError(
                f"invalid local training settings: {self} (epochs >= 1, batch_size >= 2 since a "
                "one-row batch is skipped, lr > 0, 0 < lr_final <= lr)"
            )

    def at(self, round_: int, rounds: int) -> LocalTraining:
        """The settings of round ``round_`` of ``rounds``: a constant learning rate, that round's
        :func:`cosine_lr` (itself when there is no decay)."""
        if self.lr_final is None:
            return self
        return replace(self, lr=cosine_lr(self.lr, self.lr_final, round_, rounds), lr_final=None)


def cosine_lr(lr: float, lr_final: float, round_: int, rounds: int) -> float:
    """eta_t = eta_T + (eta_1 - eta_T) (1 + cos(pi (t - 1) / (T - 1))) / 2 for round t of T.

    eta_1 = lr in round 1, eta_T = lr_final in round T and in any later round; a one-round run
    uses lr. A tier-2 site's fine-tuning replays the rounds' schedule, step t at eta_t."""
    if rounds <= 1 or round_ <= 1:
        return lr
    if round_ >= rounds:
        return lr_final
    return (
        lr_final + (lr - lr_final) * (1.0 + math.cos(math.pi * (round_ - 1) / (rounds - 1))) / 2.0
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
