"""The models a site trains: logistic regression, the paper's two-hidden-layer MLP, and the same
MLP with BatchNorm for FedBN. Every model outputs one logit per row and names its last layer
``head`` (FedPer keeps it personal); ``batchnorm_keys_of`` names what FedBN keeps local.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fedmap.schema import MODEL_NAMES as MODEL_NAMES
from fedmap.schema import ModelName as ModelName

HIDDEN = (32, 16)


class LogisticRegression(nn.Module):
    """p(y = 1 | x) = sigmoid(w . x + b)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.head = nn.Linear(n_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        logit: Tensor = self.head(x)
        return logit.squeeze(-1)


class MLP(nn.Module):
    """The paper's classifier: Linear-ReLU-Linear-ReLU-Linear, widths 32 and 16."""

    def __init__(self, n_features: int, hidden: tuple[int, int] = HIDDEN) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden[1], 1)

    def forward(self, x: Tensor) -> Tensor:
        logit: Tensor = self.head(self.body(x))
        return logit.squeeze(-1)


class MLPBatchNorm(nn.Module):
    """The same MLP with BatchNorm after each hidden Linear (FedBN keeps these local)."""

    def __init__(self, n_features: int, hidden: tuple[int, int] = HIDDEN) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, hidden[0]),
            nn.BatchNorm1d(hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.BatchNorm1d(hidden[1]),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden[1], 1)

    def forward(self, x: Tensor) -> Tensor:
        logit: Tensor = self.head(self.body(x))
        return logit.squeeze(-1)


def build_model(name: str, n_features: int) -> nn.Module:
    """A freshly initialised model; initialisation draws from torch's global generator."""
    if name == "logreg":
        return LogisticRegression(n_features)
    if name == "mlp":
        return MLP(n_features)
    if name == "mlp-bn":
        return MLPBatchNorm(n_features)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def predict_proba(model: nn.Module, x: Tensor) -> Tensor:
    """p(y = 1 | x) in evaluation mode, without building a graph."""
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(x))


def batchnorm_keys_of(params: Mapping[str, Tensor]) -> frozenset[str]:
    """The BatchNorm entries of a state dict: every key of a layer that keeps ``running_mean``.

    Works on parameters alone, so the server can tell them apart without building a model.
    """
    layers = {k.removesuffix(".running_mean") for k in params if k.endswith(".running_mean")}
    return frozenset(k for k in params if k.rsplit(".", 1)[0] in layers)


def is_head_key(key: str) -> bool:
    """True for entries of the last layer, which FedPer keeps personal."""
    return key.startswith("head.")


def input_layer_keys(params: Mapping[str, Tensor]) -> frozenset[str]:
    """The entries of the first layer (the module that owns the first key of the state dict)."""
    first_module = next(iter(params)).rsplit(".", 1)[0]
    return frozenset(k for k in params if k.rsplit(".", 1)[0] == first_module)
