"""Plain `nn.Module` nets that know nothing of Lightning, each built from a data `spec` (data.in_memory).

Every net takes images (float, B x C x H x W) or token ids (long, B x L, right-padded with the
spec's `pad_index`), so every model runs on every dataset.
"""

from __future__ import annotations

from torch import nn

from experiments.models.nets.cnn import CNN
from experiments.models.nets.mlp import MLP
from experiments.models.nets.rnn import RNN
from experiments.models.nets.speedrun import SpeedrunNet

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "rnn": RNN, "speedrun": SpeedrunNet}


def build_net(config: dict, spec: dict) -> nn.Module:
    """`config` is the model config group as plain values: `name` picks the net, the rest are its arguments."""
    kwargs = {key: value for key, value in config.items() if key != "name"}
    return NETS[config["name"]](spec, **kwargs)
