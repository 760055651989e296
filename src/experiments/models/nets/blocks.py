"""Pieces the nets share: activations by name, the true lengths of padded token rows, the inputs a net refuses."""

from __future__ import annotations

import torch
from torch import nn

from experiments.core.errors import UserError

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


def refuse_tables(spec: dict, model: str) -> None:
    """A net of ordered inputs (pixels, tokens) on a table, whose columns have no order to convolve or recur over."""
    if spec["kind"] == "table":
        raise UserError(f"model={model} reads images and texts, not a table's columns: choose model=mlp for tables")
