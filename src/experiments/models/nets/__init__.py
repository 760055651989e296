"""Plain `nn.Module` nets that know nothing of Lightning, each built from a data `spec` (data.spec).

The net contract (docs/extending.md): a class importable by its dotted path, whose constructor takes the
data's `spec` and keyword arguments, and whose forward maps a batch of inputs to class logits. Ours take
images (float, B x C x H x W) or token ids (long, B x L, right-padded with the spec's `pad_index`), so every
model runs on every dataset, and check their own arguments (`core.rules.require`).
"""

from __future__ import annotations

from torch import nn

from experiments.core.build import build
from experiments.models.nets.cnn import CNN
from experiments.models.nets.mlp import MLP
from experiments.models.nets.rnn import RNN
from experiments.models.nets.speedrun import SpeedrunNet
from experiments.models.nets.torchvision_net import TorchvisionNet

__all__ = ["CNN", "MLP", "RNN", "SpeedrunNet", "TorchvisionNet", "build_net"]


def build_net(config: dict, spec: dict) -> nn.Module:
    """`config` is the model config group: `_target_` names the net class, the rest are its keyword arguments
    after the spec."""
    return build(config, "model", nn.Module, spec)
