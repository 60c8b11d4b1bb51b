"""Every site's parameters stacked along a leading site axis, and its rows, for the batched engine.

A stacked parameter set maps each tensor name to a tensor of shape (K, *shape): row k is site
k's theta_k. Sites hold different numbers of rows: their rows are kept concatenated (``Rows``),
a minibatch step gathers B rows of every site that is still in its epoch (the others sit out,
their parameters and Adam state as they are) and every slot carries a mask, so each site follows
exactly the trajectory it would follow alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from fedmap.data import SiteData
from fedmap.models import MLP, LogisticRegression
from fedmap.params import Params

Stacked = dict[str, Tensor]
"""name -> tensor of shape (K, *shape): site k's value of each entry in row k."""


def stack(params: Sequence[Mapping[str, Tensor]]) -> Stacked:
    """theta_1 .. theta_K stacked row by row; every site must hold the same keys."""
    return {name: torch.stack([p[name] for p in params]) for name in params[0]}


def unstack(stacked: Mapping[str, Tensor], k: int) -> Params:
    """Site k's own parameters (views of row k)."""
    return {name: value[k] for name, value in stacked.items()}


def expand(params: Mapping[str, Tensor], sites: int) -> Stacked:
    """The same parameters for every site, as views (to score with, not to train)."""
    return {name: v.unsqueeze(0).expand(sites, *v.shape) for name, v in params.items()}


def broadcast(params: Mapping[str, Tensor], sites: int) -> Stacked:
    """The same parameters for every site (a copy per site, so training can diverge)."""
    return {name: v.clone() for name, v in expand(params, sites).items()}


def sites_in(stacked: Mapping[str, Tensor]) -> int:
    """K: the rows of a stacked parameter set."""
    return int(next(iter(stacked.values())).shape[0])


@dataclass(frozen=True)
class Rows:
    """One split of every site, its rows concatenated site after site: x (sum_k N_k, d), y
    (sum_k N_k) for a binary task or (sum_k N_k, 2) of (time, event) for a survival task, and
    each site's first row and row count. It holds the rows themselves, so one large site costs
    its own rows, not the largest site's size at every site."""

    x: Tensor
    y: Tensor
    offsets: Tensor
    sizes: Tensor

    @property
    def uniform(self) -> bool:
        """Every site holds as many rows, so x views as (K, N, d) without a copy."""
        return bool((self.sizes == self.sizes[0]).all())

    def take(self, sites: Tensor, idx: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x and y of row idx[j, i] of site sites[j] where mask[j, i] ((J, B, d) and (J, B, ...));
        masked slots hold the site's first row (they are never counted)."""
        flat = self.offsets[sites].unsqueeze(1) + torch.where(mask, idx, torch.zeros_like(idx))
        flat = flat.clamp_max(self.x.shape[0] - 1).reshape(-1)
        x = self.x.index_select(0, flat).reshape(*idx.shape, self.x.shape[1])
        y = self.y.index_select(0, flat).reshape(*idx.shape, *self.y.shape[1:])
        return x, y

    @cached_property
    def padded_y(self) -> tuple[Tensor, Tensor]:
        """y (K, N_max, ...) zero-padded, and the (K, N_max) mask of real rows (y only: the
        features are never padded)."""
        width = int(self.sizes.max())
        positions = torch.arange(width, device=self.y.device).unsqueeze(0)
        mask = positions < self.sizes.unsqueeze(1)
        flat = (self.offsets.unsqueeze(1) + torch.where(mask, positions, 0)).reshape(-1)
        y = self.y.index_select(0, flat.clamp_max(self.y.shape[0] - 1))
        y = y.reshape(*mask.shape, *self.y.shape[1:])
        return torch.where(mask.reshape(*mask.shape, *([1] * (y.ndim - 2))), y, 0), mask

    def blocks(self, width: int) -> Iterator[tuple[Tensor, int, Tensor]]:
        """(sites, first row, mask) for row numbers [lo, lo + width) of every site that still has
        rows there, so the work is sum_k N_k rounded up to blocks, never K x N_max."""
        for lo in range(0, int(self.sizes.max()), width):
            sites = (self.sizes > lo).nonzero().squeeze(1)
            positions = lo + torch.arange(width, device=self.x.device)
            yield sites, lo, positions.unsqueeze(0) < self.sizes[sites].unsqueeze(1)


def concatenate(sites: Sequence[SiteData], split: str) -> Rows:
    """The train or val split of every site, as ``Rows``."""
    xs = [getattr(s, f"x_{split}") for s in sites]
    ys = [getattr(s, f"y_{split}") for s in sites]
    sizes = torch.tensor([int(y.shape[0]) for y in ys], device=xs[0].device)
    offsets = torch.cumsum(sizes, dim=0) - sizes
    return Rows(torch.cat(xs), torch.cat(ys), offsets, sizes)


def linear_chain(model: nn.Module) -> list[str] | None:
    """The Linear layers, in forward order, of a model that is Linear-ReLU-...-Linear with one
    output (the MLP and logistic regression); None for any other model."""
    if not isinstance(model, MLP | LogisticRegression):
        return None
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def chain(layers: Sequence[str]) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    """h_{l+1} = relu(b_l + h_l W_l^T) site by site, each layer one fused batched matmul
    (``baddbmm``), the last without the ReLU: (K, B, d) -> (K, B)."""

    def f(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        h = x
        for i, name in enumerate(layers):
            weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    return f


def forward(model: nn.Module) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    """f(stacked, x) = (phi(x_k; theta_k))_k: the model applied site by site in one call.

    x has shape (K, B, d) and the result (K, B). The model only supplies the architecture; its
    own parameters are never used. A Linear-ReLU chain runs as fused batched matmuls; any other
    model as its own forward vmapped over the sites.
    """
    layers = linear_chain(model)
    if layers is not None:
        return chain(layers)

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


def masked_cox(risk: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Per site, (1/n_k) sum_i delta_i [log sum_{j : t_j >= t_i} exp(r_j) - r_i] over its real
    rows: (K,), ``fedmap.survival.cox_partial_nll`` with Breslow ties, for every site at once.

    Padded rows get time -inf and no event, so in each site's descending sort they come after
    every real row: they join no real row's risk set and add no term.
    """
    width = risk.shape[1]
    time = torch.where(mask, y[..., 0], torch.full_like(risk, -math.inf))
    event = torch.where(mask, y[..., 1], torch.zeros_like(risk)).to(risk.dtype)
    order = torch.argsort(time, dim=1, descending=True, stable=True)
    r, t, d = risk.gather(1, order), time.gather(1, order), event.gather(1, order)
    log_cumulative = torch.logcumsumexp(r, dim=1)
    # Breslow: row i's risk set runs to the last row whose time equals t_i (a reverse cummin
    # over the positions where the time changes)
    ends = torch.ones_like(t, dtype=torch.bool)
    ends[:, :-1] = t[:, :-1] != t[:, 1:]
    positions = torch.arange(width, device=risk.device).expand_as(order)
    marked = torch.where(ends, positions, torch.full_like(positions, width))
    last = torch.flip(torch.cummin(torch.flip(marked, [1]), dim=1).values, [1])
    terms = d * (log_cumulative.gather(1, last) - r)
    return terms.sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def masked_nll(output: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """The task's mean NLL per site (``fedmap.objective.mean_nll``): the Cox partial likelihood
    for survival targets (K, B, 2), the binary cross-entropy for labels (K, B)."""
    if y.ndim == 3:
        return masked_cox(output, y, mask)
    return masked_bce(output, y, mask)


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


@dataclass(frozen=True)
class Layout:
    """Where each stacked entry lives in one flat (K, P) tensor: its name, shape and columns.

    Training keeps all of a site's parameters in one row, so autograd and Adam see one tensor
    instead of one per entry (a handful of kernel launches a step instead of dozens).
    """

    entries: tuple[tuple[str, tuple[int, ...], int, int], ...]

    @staticmethod
    def of(stacked: Mapping[str, Tensor]) -> Layout:
        entries, offset = [], 0
        for name, value in stacked.items():
            numel = math.prod(value.shape[1:])
            entries.append((name, tuple(value.shape[1:]), offset, numel))
            offset += numel
        return Layout(tuple(entries))

    def flatten(self, stacked: Mapping[str, Tensor]) -> Tensor:
        """(K, P): row k holds every entry of site k, in order (a copy)."""
        return torch.cat(
            [stacked[name].reshape(stacked[name].shape[0], -1) for name, *_ in self.entries], dim=1
        )

    def views(self, flat: Tensor) -> Stacked:
        """The entries as views of flat (gradients flow back into it)."""
        sites = flat.shape[0]
        return {
            name: flat[:, offset : offset + numel].view(sites, *shape)
            for name, shape, offset, numel in self.entries
        }


@dataclass
class Adam:
    """Adam's moments and step count per site (torch.optim.Adam's defaults), for one flat (K, P)
    parameter tensor. A fresh state each round, as a site starts each round with a new optimiser.
    """

    lr: float
    m: Tensor
    v: Tensor
    steps: Tensor
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @staticmethod
    def start(flat: Tensor, lr: float) -> Adam:
        steps = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        return Adam(lr, torch.zeros_like(flat), torch.zeros_like(flat), steps)

    def step(self, p: Tensor, g: Tensor, sites: Tensor | None = None) -> Tensor:
        """One Adam step of the given sites' rows (every site for None); the others keep their
        parameters, moments and step counts. p and g hold only those sites' rows.

        m <- lerp(m, g, 1 - b1); v <- b2 v + (1 - b2) g^2; t <- t + 1;
        theta <- theta - (lr / (1 - b1^t)) (m / (sqrt(v) / sqrt(1 - b2^t) + eps)).
        """
        if sites is None:
            m, v, steps = self.m, self.v, self.steps + 1
        else:
            m, v = self.m.index_select(0, sites), self.v.index_select(0, sites)
            steps = self.steps.index_select(0, sites) + 1
        step_size = (self.lr / (1 - self.beta1**steps)).to(p.dtype).unsqueeze(1)
        bias2_sqrt = torch.sqrt(1 - self.beta2**steps).to(p.dtype).unsqueeze(1)
        m.lerp_(g, 1 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        if sites is None:
            self.steps = steps
        else:
            self.m.index_copy_(0, sites, m)
            self.v.index_copy_(0, sites, v)
            self.steps.index_copy_(0, sites, steps)
        return p - step_size * (m / (v.sqrt() / bias2_sqrt + self.eps))
