"""Convolutional net: 2-D convolutions over images, 1-D convolutions over a sequence of token embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from experiments.core.rules import boolean, integer, number, one_of, positive_integers, require
from experiments.data.contract import output_size
from experiments.models.nets.blocks import ACTIVATIONS, make_activation, refuse_tables


class CNN(nn.Module):
    """Stages of `convs_per_stage` `conv-(batch norm)-activation` blocks, each stage followed by 2x pooling.

    Images end in a flatten whose width is worked out from the input shape (a stage skips its pooling
    once the feature map is down to 1 pixel, so deep nets fit small images). Text ends in the max and
    the mean of each channel over the real (unpadded) positions, so the head does not depend on the
    sequence length: the max finds a filter's strongest phrase, the mean sums up the whole review.
    """

    def __init__(
        self,
        spec: dict,
        channels: list[int] = (32, 64),
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        pool: str = "max",
        batch_norm: bool = True,
        activation: str = "relu",
        dropout: float = 0.1,
        embedding_dim: int = 64,
    ) -> None:
        super().__init__()
        require(
            "model",
            channels=(channels, positive_integers),
            convs_per_stage=(convs_per_stage, integer(1)),
            kernel_size=(kernel_size, integer(1)),
            pool=(pool, one_of("max", "avg")),
            batch_norm=(batch_norm, boolean),
            activation=(activation, one_of(*ACTIVATIONS)),
            dropout=(dropout, number(0.0, 1.0)),
            embedding_dim=(embedding_dim, integer(1)),
        )
        refuse_tables(spec, "cnn")
        self.is_text = spec["kind"] == "text"
        if self.is_text:
            self.embed = nn.Embedding(spec["vocab_size"], embedding_dim, padding_idx=spec["pad_index"])
            conv, norm, pools = nn.Conv1d, nn.BatchNorm1d, {"max": nn.MaxPool1d, "avg": nn.AvgPool1d}
            self.pad_index = spec["pad_index"]
            in_channels, size = embedding_dim, [spec["seq_len"]]
        else:
            conv, norm, pools = nn.Conv2d, nn.BatchNorm2d, {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
            in_channels, size = spec["shape"][0], list(spec["shape"][1:])
        layers: list[nn.Module] = []
        self.halvings = 0
        for out_channels in channels:
            for _ in range(convs_per_stage):
                layers.append(conv(in_channels, out_channels, kernel_size, padding="same", bias=not batch_norm))
                if batch_norm:
                    layers.append(norm(out_channels))
                layers.append(make_activation(activation))
                in_channels = out_channels
            if min(size) >= 2:
                layers.append(pools[pool](2))
                size = [s // 2 for s in size]
                self.halvings += 1
        self.features = nn.Sequential(*layers)
        head_width = 2 * in_channels if self.is_text else in_channels * math.prod(size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_width, output_size(spec)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_text:
            return self.head(self.features(x).flatten(1))
        real = (x != self.pad_index).unsqueeze(1).float()  # (B, 1, L)
        real[..., 0] = 1.0  # an empty review reads its first position, so its max stays finite
        features = self.features(self.embed(x).transpose(1, 2))  # (B, E, L): embeddings are the channels
        if self.halvings:  # a pooled position is real if any position it covers was
            real = F.max_pool1d(real, 2**self.halvings)
        real = real.expand_as(features)
        strongest = features.masked_fill(real == 0, float("-inf")).amax(dim=2)
        average = (features * real).sum(dim=2) / real.sum(dim=2).clamp(min=1)
        return self.head(torch.cat([strongest, average], dim=1))
