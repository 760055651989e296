"""Convolutional net: 2-D convolutions over images, 1-D convolutions over a sequence of token embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.models.nets.blocks import make_activation


class CNN(nn.Module):
    """Stages of `convs_per_stage` `conv-(batch norm)-activation` blocks, each stage followed by 2x pooling.

    Images end in a flatten whose width is worked out from the input shape (a stage skips its pooling
    once the feature map is down to 1 pixel, so deep nets fit small images); text ends in a max over
    time, so the head does not depend on the sequence length.
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
        self.is_text = spec["kind"] == "text"
        if self.is_text:
            self.embed = nn.Embedding(spec["vocab_size"], embedding_dim, padding_idx=spec["pad_index"])
            conv, norm, pools = nn.Conv1d, nn.BatchNorm1d, {"max": nn.MaxPool1d, "avg": nn.AvgPool1d}
            in_channels, size = embedding_dim, [spec["seq_len"]]
        else:
            conv, norm, pools = nn.Conv2d, nn.BatchNorm2d, {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
            in_channels, size = spec["shape"][0], list(spec["shape"][1:])
        layers: list[nn.Module] = []
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
        self.features = nn.Sequential(*layers)
        head_width = in_channels if self.is_text else in_channels * math.prod(size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_width, spec["num_classes"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_text:
            x = self.embed(x).transpose(1, 2)  # (B, L, E) -> (B, E, L): embeddings are the channels
            return self.head(self.features(x).amax(dim=2))
        return self.head(self.features(x).flatten(1))
