"""Any classification model of `torchvision.models`, by name, with its weights: `model=torchvision`.

    python -m experiments data=image_folder data.root=<folder> model=torchvision model.name=resnet18
    model.weights=DEFAULT                      torchvision's best ImageNet weights for the model (its `DEFAULT`)
    model.weights=IMAGENET1K_V1                a weights enum member by name (or ResNet18_Weights.IMAGENET1K_V1)
    model.weights=<file>                       a state dict saved from the same architecture (torch.save), or a
                                               checkpoint of a `model=torchvision` run
    model.weights=null                         from scratch

The model's own classification layer (its last `Linear`, or `Conv2d` for SqueezeNet) is what the weights'
classes were; it becomes part of `backbone` as an identity, and `head` is a new `Linear` for the data's classes
(always fresh: a weights file's head is left out). `callbacks.backbone_finetuning` (conf/callbacks/finetuning.yaml,
which `model=torchvision` brings along) freezes `backbone` for the first epochs, then trains it at a lower rate.

What the weights expect of their inputs is made here, inside the net, so a deployed copy does it too: grey images
are repeated to three channels, and images are resized to `image_size` (bilinear) when it is set, or to the size a
model takes when it takes only one (`vit_*`: 224). The weights'
normalisation (ImageNet's mean and std, for every torchvision classification weight) is applied by the data
module: the image data configs read `model.normalization` (conf/model/torchvision.yaml) and normalise with it
instead of their own statistics.

Weights come through torchvision's weights API and torch's cache (`torch.hub.get_dir()/checkpoints/`, i.e.
`~/.cache/torch/hub/checkpoints/` or `$TORCH_HOME/hub/checkpoints/`): downloaded on first use, read from there
after. Offline without them, one line names the file to put there. A net built to load a checkpoint into
(evaluate, predict, export) fetches no weights: the checkpoint holds them all (`checkpoint_holds_weights`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from experiments.core.errors import UserError, first_line
from experiments.core.rules import is_integer, mean_and_std, require
from experiments.data.contract import output_size

# Builders whose models end in auxiliary classifiers while training: built without them (their outputs are no logits).
AUXILIARY = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}

_loading_checkpoint = contextvars.ContextVar("loading_checkpoint", default=False)


@contextlib.contextmanager
def checkpoint_holds_weights() -> Iterator[None]:
    """Nets built inside this are about to get a checkpoint's weights: no pretrained weights are fetched for them."""
    token = _loading_checkpoint.set(True)
    try:
        yield
    finally:
        _loading_checkpoint.reset(token)


def classification_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def builder(name: str):
    """torchvision's builder of the classification model `name`, or one line listing those there are."""
    import torchvision

    if not isinstance(name, str) or name not in classification_models():
        known = classification_models()
        close = [m for m in known if isinstance(name, str) and (name.lower() in m or m in name.lower())]
        hint = f"did you mean {', '.join(close[:5])}? " if close else ""
        raise UserError(
            f"model.name={name!r} is not a torchvision classification model; {hint}"
            f"choose from the {len(known)} of torchvision.models.list_models(module=torchvision.models), "
            "e.g. resnet18, efficientnet_b0, convnext_tiny, mobilenet_v3_small, vit_b_16"
        )
    return torchvision.models.get_model_builder(name)


def weights_enum(name: str, value: str):
    """The weights enum member `value` names for the model `name` (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.X), or
    None when `value` is not one of torchvision's names (then it is a file)."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = value.split(".")[-1]
    if "." in value and not value.startswith(f"{enum.__name__}."):
        other = value.split(".")[0]
        if other.endswith("_Weights") and hasattr(torchvision.models, other) and not Path(value).exists():
            raise UserError(
                f"model.weights={value} are weights of another architecture, not {name}'s; "
                f"choose from DEFAULT, {', '.join(w.name for w in enum)}"
            )
        return None
    if member == "DEFAULT":
        return enum.DEFAULT
    if member in enum.__members__:
        return enum[member]
    if member.isupper() and not Path(value).exists():  # looks like an enum name rather than a file
        raise UserError(
            f"model.weights={value}: {name} has no such weights; choose from DEFAULT, {', '.join(enum.__members__)}"
        )
    return None


def fetch_weights(weights, value: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision weights, from torch's cache, downloaded there first when it is not in it."""
    import urllib.error

    url = weights.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:
        reason = first_line(str(getattr(error, "reason", None) or error))
        if cached.is_file():  # a download cut short, or another file under the name
            raise UserError(
                f"model.weights={value}: {cached} cannot be read ({reason}); delete it to download it again"
            ) from error
        if not isinstance(error, urllib.error.URLError | OSError | RuntimeError):
            raise
        raise UserError(
            f"model.weights={value}: {cached.name} is not in torch's cache ({cached.parent}) and cannot be downloaded "
            f"from {url} ({reason}); put that file there (on a connected machine a first run does), or give "
            "model.weights=<file> or null"
        ) from error


def read_weights_file(value: str) -> dict[str, torch.Tensor]:
    """A state dict from a file: torchvision's own keys, a `TorchvisionNet`'s (`backbone.` ...), or a checkpoint of a
    run of one (`net.backbone.` ...); as the torchvision model's keys."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(
            f"model.weights={value}: no such file, and not a torchvision weights name; give DEFAULT, a weights "
            "name such as IMAGENET1K_V1, a state dict file, or null"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickled code, a damaged or foreign file: the user's file either way
        raise UserError(f"model.weights={value} cannot be read as a state dict ({first_line(str(error))})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"model.weights={value} holds no state dict (a dict of tensors, as torch.save(model.state_dict()))"
        )
    for prefix in ("net.backbone.", "backbone."):
        if any(key.startswith(prefix) for key in state):
            return {key.removeprefix(prefix): v for key, v in state.items() if key.startswith(prefix)}
    return state


def classification_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The model's last Linear or Conv2d, by name: the layer that maps its features to the weights' classes."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return layers[-1]


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def positive_size(value: object) -> str | None:
    ok = value is None or (is_integer(value) and 16 <= value <= 1024)
    return None if ok else "null (the images' own size) or an integer from 16 to 1024, e.g. 224"


class TorchvisionNet(nn.Module):
    """`backbone`: a torchvision classification model without its classification layer; `head`: a Linear for the
    data's classes. Inputs: float images (B, C, H, W), normalised by the data module; 1 or 3 channels."""

    def __init__(
        self,
        spec: dict,
        name: str = "resnet18",
        weights: str | None = "DEFAULT",
        image_size: int | None = None,
        dropout: float = 0.0,
        normalization: dict | None = None,  # read by the data module (see the module's docstring); kept for the record
    ) -> None:
        super().__init__()
        if spec["kind"] != "image":
            raise UserError("model=torchvision takes images; this data is text: choose model=mlp, cnn or rnn")
        require("model", image_size=(image_size, positive_size), normalization=(normalization, mean_and_std))
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout={dropout!r} is not allowed: it must be a number >= 0.0 and < 1.0")
        build = builder(name)
        weights = None if weights in (None, "", "null", "none", "None") else str(weights)
        chosen = weights_enum(name, weights) if weights else None
        extra = {"aux_logits": False, "init_weights": False} if name in AUXILIARY else {}
        model = build(weights=None, **extra)
        layer_name, layer = classification_layer(model)
        if weights is not None and not _loading_checkpoint.get():
            state = fetch_weights(chosen, weights) if chosen is not None else read_weights_file(weights)
            load_backbone(model, state, name, weights, layer_name, AUXILIARY.get(name, ()))
        set_module(model, layer_name, nn.Identity())
        features = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
        required = getattr(model, "image_size", None)  # a vision transformer's: it takes no other size
        self.name, self.channels, self.image_size = name, spec["shape"][0], image_size or required
        self.backbone = model
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, output_size(spec)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:  # grey: the same plane in each of the three channels the weights were made for
            x = x.expand(-1, 3, -1, -1)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            shrinking = x.shape[-1] > self.image_size
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=shrinking)
        features = self.backbone(x)
        return self.head(features.flatten(1))


def load_backbone(
    model: nn.Module, state: dict, name: str, value: str, layer_name: str, auxiliary: tuple[str, ...]
) -> None:
    """The weights into `model`, all but its classification layer's (and auxiliary classifiers'); one line when they
    are not weights of this architecture."""
    left_out = (f"{layer_name}.", *auxiliary)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(left_out)}
    given = {k: v for k, v in state.items() if not k.startswith(left_out)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    reshaped = sorted(k for k in set(own) & set(given) if own[k].shape != given[k].shape)
    if missing or unexpected or reshaped:
        example = (reshaped or missing or unexpected)[0]
        raise UserError(
            f"model.weights={value} are not weights of {name}: {len(missing)} of its tensors missing, "
            f"{len(unexpected)} unknown, {len(reshaped)} of another shape (e.g. {example}); give weights saved "
            f"from {name}, or choose the model.name they were saved from"
        )
    model.load_state_dict(given, strict=False)
