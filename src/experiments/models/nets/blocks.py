"""Pieces the nets share: activations by name, and the true lengths of padded token rows."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def token_lengths(tokens: torch.Tensor, pad_index: int) -> torch.Tensor:
    """Number of real tokens per row of a right-padded batch (at least 1, so empty rows stay valid)."""
    return (tokens != pad_index).sum(dim=1).clamp(min=1)
