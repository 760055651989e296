"""Recurrent net (GRU or LSTM) over image rows or tokens, read in both directions without packing."""

from __future__ import annotations

import torch
from torch import nn

from experiments.core.rules import boolean, integer, number, one_of, require
from experiments.data.contract import output_size
from experiments.models.nets.blocks import refuse_tables, token_lengths

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
POOLINGS = ("last", "max")


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row of (B, L, F) with its first `length` steps reversed and the padding after them left in place."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    source = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    return x.gather(1, source.unsqueeze(2).expand_as(x))


class RNN(nn.Module):
    """Layers of one recurrent cell per direction; the head reads the last states or the max over time.

    Right padding would reach the backward direction first, so that direction reads each row reversed
    within its own length: padding then comes after the real steps for both directions, and no real
    step ever sees it. This is what packed sequences give, at the speed of a plain padded batch (on a
    CPU, packing costs several times more than the padding it skips). `pooling=last` takes each
    direction's state after its last real step; `max` the maximum of every output over the real steps.
    """

    def __init__(
        self,
        spec: dict,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        embedding_dim: int = 64,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        require(
            "model",
            cell=(cell, one_of(*CELLS)),
            hidden_size=(hidden_size, integer(1)),
            num_layers=(num_layers, integer(1)),
            bidirectional=(bidirectional, boolean),
            dropout=(dropout, number(0.0, 1.0)),
            embedding_dim=(embedding_dim, integer(1)),
            pooling=(pooling, one_of(*POOLINGS)),
        )
        refuse_tables(spec, "rnn")
        self.is_text, self.pooling = spec["kind"] == "text", pooling
        if self.is_text:
            self.pad_index = spec["pad_index"]
            self.embed = nn.Embedding(spec["vocab_size"], embedding_dim, padding_idx=self.pad_index)
            input_size = embedding_dim
        else:
            channels, _, width = spec["shape"]
            input_size = channels * width  # one step per image row
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            self.layers.append(
                nn.ModuleList(CELLS[cell](input_size, hidden_size, batch_first=True) for _ in range(directions))
            )
            input_size = hidden_size * directions
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(input_size, output_size(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_text:
            lengths = token_lengths(x, self.pad_index)
            sequence = self.embed(x)
        else:
            sequence = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C*W)
            lengths = torch.full((len(x),), sequence.shape[1], device=x.device)
        for depth, directions in enumerate(self.layers):
            if depth > 0:
                sequence = self.dropout(sequence)
            outputs = [directions[0](sequence)[0]]
            if len(directions) == 2:
                backward, _ = directions[1](reverse_within_lengths(sequence, lengths))
                outputs.append(reverse_within_lengths(backward, lengths))
            sequence = torch.cat(outputs, dim=2)  # (B, L, hidden * directions)
        return self.head(self.dropout(self.pool(sequence, lengths)))

    def pool(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = torch.arange(outputs.shape[1], device=outputs.device).unsqueeze(0) < lengths.unsqueeze(1)
        if self.pooling == "max":
            return outputs.masked_fill(~real.unsqueeze(2), float("-inf")).amax(dim=1)
        # The forward half is done after the last real step; the backward half after reading step 0.
        hidden = outputs.shape[2] // len(self.layers[-1])
        last = outputs.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])).squeeze(1)
        return torch.cat([last[:, :hidden], outputs[:, 0, hidden:]], dim=1)
