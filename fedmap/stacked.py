"""Every site's parameters and data stacked along a leading site axis, for the batched engine.

A stacked parameter set maps each tensor name to a tensor of shape (K, *shape): row k is site
k's theta_k. Sites hold different numbers of rows, so their data is padded to the largest site
and every row carries a mask; a site whose epoch is over sits out the remaining steps (its
parameters and its Adam state stay as they are), so each site follows exactly the trajectory it
would follow alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from fedmap.data import SiteData
from fedmap.params import Params

Stacked = dict[str, Tensor]
"""name -> tensor of shape (K, *shape): site k's value of each entry in row k."""


def stack(params: Sequence[Mapping[str, Tensor]]) -> Stacked:
    """theta_1 .. theta_K stacked row by row; every site must hold the same keys."""
    return {name: torch.stack([p[name] for p in params]) for name in params[0]}


def unstack(stacked: Mapping[str, Tensor], k: int) -> Params:
    """Site k's own parameters (views of row k)."""
    return {name: value[k] for name, value in stacked.items()}


def broadcast(params: Mapping[str, Tensor], sites: int) -> Stacked:
    """The same parameters for every site (a copy per site, so training can diverge)."""
    return {name: v.unsqueeze(0).expand(sites, *v.shape).clone() for name, v in params.items()}


@dataclass(frozen=True)
class Padded:
    """One split of every site, padded to the largest: x (K, N, d), y (K, N), sizes (K,)."""

    x: Tensor
    y: Tensor
    sizes: Tensor

    @property
    def mask(self) -> Tensor:
        """(K, N): True on a site's real rows."""
        width = self.x.shape[1]
        return torch.arange(width, device=self.x.device) < self.sizes.unsqueeze(1)


def pad(sites: Sequence[SiteData], split: str) -> Padded:
    """The train or val split of every site, zero-padded (binary tasks: y of shape (N,))."""
    xs = [getattr(s, f"x_{split}") for s in sites]
    ys = [getattr(s, f"y_{split}") for s in sites]
    width = max(int(x.shape[0]) for x in xs)
    x = xs[0].new_zeros((len(sites), width, xs[0].shape[1]))
    y = ys[0].new_zeros((len(sites), width))
    for k, (xk, yk) in enumerate(zip(xs, ys, strict=True)):
        x[k, : xk.shape[0]] = xk
        y[k, : yk.shape[0]] = yk
    sizes = torch.tensor([int(v.shape[0]) for v in ys], device=x.device)
    return Padded(x, y, sizes)


def forward(model: nn.Module) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    """f(stacked, x) = (phi(x_k; theta_k))_k: the model applied site by site in one call.

    x has shape (K, B, d) and the result (K, B). The model only supplies the architecture; its
    own parameters are never used.
    """

    def one(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        out: Tensor = functional_call(model, dict(params), (x,))
        return out

    batched: Callable[[Mapping[str, Tensor], Tensor], Tensor] = vmap(one)
    return batched


def masked_bce(logits: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """(1/n_k) sum_{i in batch_k} BCE(y_ki, logit_ki) per site: (K,), the mean over real rows."""
    losses = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    count = mask.sum(dim=1).clamp_min(1)
    return torch.where(mask, losses, torch.zeros_like(losses)).sum(dim=1) / count


def batches_per_epoch(sizes: Sequence[int], batch_size: int) -> list[int]:
    """Minibatches site k trains on per epoch: ceil(N_k / B), less a final batch of one row
    (``fedmap.training.train_local`` skips it, since BatchNorm and Cox cannot use it)."""
    out = []
    for n in sizes:
        count = math.ceil(n / batch_size)
        if n > 1 and n % batch_size == 1:
            count -= 1
        out.append(count)
    return out


def epoch_orders(sizes: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
    """(K, N_max) row orders: site k's own ``randperm(N_k)`` from its generator, padded with 0.

    Drawn on the CPU exactly as ``train_local`` draws them, so both engines shuffle alike.
    """
    out = torch.zeros((len(sizes), max(sizes)), dtype=torch.long)
    for k, (n, g) in enumerate(zip(sizes, generators, strict=True)):
        out[k, :n] = torch.randperm(n, generator=g)
    return out


@dataclass
class Adam:
    """Adam's moments and step count per site (torch.optim.Adam's defaults), for stacked tensors.

    A fresh state each round, as a site starts each round with a new optimiser.
    """

    lr: float
    m: Stacked
    v: Stacked
    steps: Tensor
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @staticmethod
    def start(params: Mapping[str, Tensor], lr: float) -> Adam:
        sites = next(iter(params.values())).shape[0]
        device = next(iter(params.values())).device
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return Adam(
            lr, zeros, {k: z.clone() for k, z in zeros.items()}, torch.zeros(sites, device=device)
        )

    def step(self, params: Stacked, grads: Mapping[str, Tensor], active: Tensor) -> Stacked:
        """One Adam step for the active sites; the others keep their parameters and moments.

        m <- lerp(m, g, 1 - b1); v <- b2 v + (1 - b2) g^2; t <- t + 1;
        theta <- theta - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
        """
        self.steps = self.steps + active.to(self.steps.dtype)
        t = self.steps.clamp_min(1)
        step_size = self.lr / (1 - self.beta1**t)
        bias2_sqrt = torch.sqrt(1 - self.beta2**t)
        out: Stacked = {}
        for name, p in params.items():
            g = grads[name]
            shape = (p.shape[0],) + (1,) * (p.ndim - 1)
            on = active.reshape(shape)
            m = torch.where(on, torch.lerp(self.m[name], g, 1 - self.beta1), self.m[name])
            v = torch.where(on, self.v[name] * self.beta2 + (1 - self.beta2) * g * g, self.v[name])
            denom = torch.sqrt(v) / bias2_sqrt.reshape(shape) + self.eps
            moved = p - step_size.reshape(shape).to(p.dtype) * m / denom
            self.m[name], self.v[name] = m, v
            out[name] = torch.where(on, moved, p)
        return out
