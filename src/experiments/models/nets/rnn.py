"""Recurrent net (GRU or LSTM): image rows as a sequence, or tokens packed so padding costs nothing."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from experiments.models.nets.blocks import token_lengths

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RNN(nn.Module):
    """Classifies from the final hidden state of the last layer (both directions when bidirectional)."""

    def __init__(
        self,
        spec: dict,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        self.is_text = spec["kind"] == "text"
        if self.is_text:
            self.pad_index = spec["pad_index"]
            self.embed = nn.Embedding(spec["vocab_size"], embedding_dim, padding_idx=self.pad_index)
            input_size = embedding_dim
        else:
            channels, _, width = spec["shape"]
            input_size = channels * width  # one step per image row
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size * self.directions, spec["num_classes"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_text:
            # pack_padded_sequence wants the lengths on the CPU: one small copy per batch.
            lengths = token_lengths(x, self.pad_index).cpu()
            sequence = pack_padded_sequence(self.embed(x), lengths, batch_first=True, enforce_sorted=False)
        else:
            sequence = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C*W)
        _, hidden = self.rnn(sequence)
        if isinstance(hidden, tuple):  # LSTM returns (h, c)
            hidden = hidden[0]
        last_layer = hidden[-self.directions :]  # (directions, B, hidden)
        return self.head(torch.cat(list(last_layer), dim=1))
