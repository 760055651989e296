"""A small residual net for images, written against the net contract: `__init__(spec, **settings)`, logits out."""

from __future__ import annotations

import torch
from torch import nn

from experiments.core.rules import integer, require
from experiments.data.contract import output_size


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class TinyResNet(nn.Module):
    def __init__(self, spec: dict, width: int = 16, blocks: int = 2) -> None:
        super().__init__()
        # One line naming the key, as the package's own nets answer a bad setting.
        require("model", width=(width, integer(1)), blocks=(blocks, integer(0)))
        if spec["kind"] != "image":
            raise ValueError("TinyResNet reads images")
        channels = spec["shape"][0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.head = nn.Linear(width, output_size(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))
