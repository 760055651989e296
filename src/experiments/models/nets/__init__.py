"""Plain `nn.Module` nets that know nothing of Lightning, each built from a data `spec` (data.spec).

The net contract (docs/extending.md): a class importable by its dotted path, whose constructor takes the
data's `spec` and keyword arguments, and whose forward maps a batch of inputs to class logits. Ours take
images (float, B x C x H x W) or token ids (long, B x L, right-padded with the spec's `pad_index`), so every
model runs on every dataset, and check their own arguments (`checks.require`).
"""

from __future__ import annotations

import inspect

from torch import nn

from experiments.core.errors import UserError
from experiments.core.rules import import_target
from experiments.models.nets.cnn import CNN
from experiments.models.nets.mlp import MLP
from experiments.models.nets.rnn import RNN
from experiments.models.nets.speedrun import SpeedrunNet

# Checkpoints written before nets were named by `_target_` name them by these.
EARLIER_NAMES: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "rnn": RNN, "speedrun": SpeedrunNet}


def build_net(config: dict, spec: dict) -> nn.Module:
    """`config` is the model config group as plain values: `_target_` names the net class, the rest are its
    keyword arguments after the spec."""
    kwargs = dict(config)
    target = kwargs.pop("_target_", None)
    net_class = import_target(target, "model", nn.Module) if target else EARLIER_NAMES[kwargs.pop("name")]
    try:
        inspect.signature(net_class).bind(spec, **kwargs)
    except TypeError as error:  # an argument the class does not take, or one it needs and did not get
        raise UserError(f"model: {net_class.__qualname__} {error}; `--cfg job` shows the model's settings") from error
    return net_class(spec, **kwargs)
