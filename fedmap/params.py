"""Model parameters as plain name -> tensor mappings (a state dict, buffers included)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

Params = dict[str, Tensor]


def get_params(model: nn.Module) -> Params:
    """A detached copy of the model's state dict, so later training cannot alter it."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def set_params(model: nn.Module, params: Mapping[str, Tensor]) -> None:
    """Load params into the model; every key must match."""
    model.load_state_dict(dict(params), strict=True)


def merge(
    base: Mapping[str, Tensor], override: Mapping[str, Tensor], keys: Iterable[str]
) -> Params:
    """base with the entries named in keys taken from override (FedBN, FedPer)."""
    chosen = frozenset(keys)
    return {k: (override[k] if k in chosen else v) for k, v in base.items()}


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """The learnable parameters by name, live (gradients flow through them)."""
    return dict(model.named_parameters())


def num_parameters(params: Mapping[str, Tensor]) -> int:
    return sum(int(v.numel()) for v in params.values())
