"""What the rest of the package asks of a data module. Any LightningDataModule that has it works: ours hold
whole splits in memory (in_memory.py), one of a user's may stream from a `Dataset` through a `DataLoader`.

Required:
- `spec`, a `DataSpec`, readable right after construction: the net is built from it before any data is read.
- `train_dataloader`, `val_dataloader`, `test_dataloader`: batches of `(inputs, labels)`, the inputs as the spec
  says once on the device (Lightning's `on_after_batch_transfer` may convert them there): float images
  (B, C, H, W), integer token ids (B, L), right-padded with the spec's `pad_index`, or float table rows
  (B, features); the labels class ids (long) or, for a regression, the numbers (float).

Optional, each used where it is there (the functions below read them, with a fallback):
- `class_names`: the name of each class id; dashboards and predictions show them instead of the ids.
- `encode_inputs(items) -> Tensor`: new inputs (image files, or texts) in the form the data module's loaders
  take them, for predictions; `predict_on(inputs)` then makes its predict loader yield those.
- `training_tensors() -> (inputs, labels)`: the whole training split, for nets that fit something to it
  before training (the naive-Bayes feature weights of the text MLP).
- `vocabulary`: the token of each id, so that dashboards show misclassified texts as words.
- `state_dict()` / `load_state_dict(state)` (Lightning's own hooks): what the data module learnt from its
  training data (a table's column statistics); saved in every checkpoint and loaded back for predictions, so
  new inputs are read exactly as the training inputs were, without the training data.
- `preprocessing() -> nn.Module`: what the data module does to a batch on the device before the net sees it, outside
  training (no augmentation), as a module that takes the raw inputs a user has: uint8 images (B, C, H, W) of the
  spec's shape, or token ids (B, L). An export (`experiments export`) puts it in front of the net.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import torch

from experiments.core.errors import UserError


class DataSpec(TypedDict, total=False):
    """What a net needs to know of its data, as plain values: it is kept in every checkpoint."""

    kind: Literal["image", "text", "table"]
    task: str  # what the labels are: "classification" (the default) or "regression" (models/tasks.py)
    num_classes: int  # classification
    shape: list[int]  # images: [channels, height, width]
    vocab_size: int  # texts: every token id is below it
    pad_index: int  # texts: the id that pads rows on the right
    seq_len: int  # texts: tokens per row
    features: int  # tables: numbers per row, once encoded
    target_mean: float  # regression: the training labels' mean and standard deviation
    target_std: float
    outputs: int  # set by the model, not the data: the width of the net's last layer (output_size)


def output_size(spec: dict) -> int:
    """The width of a net's last layer: what the model's task asks for (`outputs`), else one per class."""
    return spec.get("outputs") or spec["num_classes"]


def class_names(datamodule, num_classes: int) -> list[str]:
    """The data module's class names, or the class ids as text."""
    names = getattr(datamodule, "class_names", None)
    return [str(name) for name in names] if names else [str(i) for i in range(num_classes)]


def training_tensors(datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training split, from a data module that can give it."""
    if not hasattr(datamodule, "training_tensors"):
        name = type(datamodule).__name__
        raise UserError(f"this net fits itself to the training data, which {name} cannot give whole (training_tensors)")
    return datamodule.training_tensors()


def preprocessing(datamodule) -> torch.nn.Module:
    """The module that takes raw inputs to what the net takes, from a data module that can give it."""
    if not hasattr(datamodule, "preprocessing"):
        name = type(datamodule).__name__
        raise UserError(f"{name} does not say what its inputs go through before the net (preprocessing): no export")
    return datamodule.preprocessing()


def encode_inputs(datamodule, items: list) -> torch.Tensor:
    """New inputs in the data module's own form, from a data module that can read them."""
    if not hasattr(datamodule, "encode_inputs"):
        raise UserError(f"{type(datamodule).__name__} cannot read new inputs (encode_inputs); predict with --split")
    return datamodule.encode_inputs(items)
