"""Datasets held in memory as compact tensors; a batch is an index slice, preprocessing runs per batch.

Our datasets are small enough to live in memory whole (uint8 images, integer token ids), so a training
step needs no per-sample Python: `TensorBatches` slices a shuffled index, and the DataModule turns the
batch into float inputs only after it reached its device (`on_after_batch_transfer`), where
normalisation and augmentation run on the whole batch at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from torch import nn

from experiments.core.errors import UserError
from experiments.core.lightning_internals import batches_done
from experiments.core.rules import integer, mean_and_std, number, require
from experiments.data.contract import DataSpec
from experiments.data.folds import check_folds, validation_rows
from experiments.data.images import read_images


def split_off(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, folds: int | None = None, fold: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Carve the validation part off (x, y), a random `fraction` or fold `fold` of `folds` (folds.py): rest, carved."""
    rest, carved = validation_rows(y, fraction, seed, folds, fold)
    # Rows copied with index_select, as `TensorBatches._take` does: CIFAR-10's 150 MB of training images in
    # 95 ms, against 220 ms with `x[rest]` (2-core Xeon), every run.
    return (x.index_select(0, rest), y.index_select(0, rest)), (x.index_select(0, carved), y.index_select(0, carved))


def check_held_out(val_size: float, test_size: float) -> None:
    """A dataset that carves its test part too (`test_size`, a fraction of all): the rule of `test_size`, and
    the two parts together leave something to train on."""
    require("data", test_size=(test_size, number(0.0, 1.0, low_inclusive=False)))
    if val_size + test_size >= 1.0:
        held_out = val_size + test_size
        raise UserError(f"data.val_size + data.test_size = {held_out:g} leaves nothing to train on: keep it below 1")


def fits_on_device(nbytes: int, free_bytes: int) -> bool:
    """Whole splits go to the GPU when they take at most a quarter of its free memory: the rest is the model's."""
    return nbytes <= free_bytes // 4


class TensorBatches:
    """Batches `(x[idx], y[idx])` of whole in-memory splits, in a fresh order each epoch when shuffled.

    The order depends only on `seed` and the epoch number, and an iteration begins at batch `start()`,
    read when it begins: a run resumed mid-epoch goes on with the very next batch, as if it had never
    stopped, from the one count of the epoch's batches done that its checkpoint keeps (Lightning's).
    Under data parallelism every process draws the same order and takes its own `batch_size` slice of
    each global batch of `world_size * batch_size`: together the processes cover the epoch exactly as
    one process would, and all run the same number of steps (a last global batch with fewer samples
    than processes lends its final sample to the processes left without one). Splits resident on a GPU
    are indexed there; `pin` gathers CPU batches into page-locked memory, for asynchronous copies.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        pin: bool = False,
        start: Callable[[], int] = lambda: 0,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.rank, self.world_size = rank, world_size
        self.pin = pin
        self.start = start

    def __len__(self) -> int:
        return math.ceil(len(self.y) / (self.batch_size * self.world_size))

    def _bounds(self) -> Iterator[tuple[int, int]]:
        """This process's [start, stop) positions within each global batch of the epoch's order."""
        n, size = len(self.y), self.batch_size * self.world_size
        for start in range(0, n, size):
            share, extra = divmod(min(size, n - start), self.world_size)  # the first `extra` take one more
            first = start + self.rank * share + min(self.rank, extra)
            stop = first + share + (self.rank < extra)
            yield (first, stop) if stop > first else (n - 1, n)

    def _take(self, tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # index_select copies whole rows; `tensor[idx]` goes through the general indexing kernel, which on
        # a CPU takes about ten times as long for an MNIST batch (100 us against 8 us, a tenth of a step).
        if not self.pin:
            return torch.index_select(tensor, 0, idx)
        batch = torch.empty((len(idx), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        return torch.index_select(tensor, 0, idx, out=batch)

    # Lightning resumes a loader mid-epoch only if it says it can, by having these two methods; this one
    # can, from Lightning's own count (`start`), so it has nothing of its own to save. (A state saved by an
    # earlier version is accepted and not needed.)
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first = self.start()
        bounds = itertools.islice(self._bounds(), first if 0 < first < len(self) else 0, None)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
            order = torch.randperm(len(self.y), generator=generator).to(self.x.device)
            for start, stop in bounds:
                idx = order[start:stop]
                yield self._take(self.x, idx), self._take(self.y, idx)
        else:  # contiguous slices are views: no copy at all
            for start, stop in bounds:
                x, y = self.x[start:stop], self.y[start:stop]
                yield (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)


class InMemoryDataModule(L.LightningDataModule):
    """Base for our datasets: subclasses fill `self.splits` in `setup` and describe their input in `spec`.

    `spec` (contract.DataSpec) is what a net needs to fit the data, as plain values, e.g.
    `{"kind": "image", "shape": [1, 8, 8], "num_classes": 10}` or
    `{"kind": "text", "vocab_size": 20000, "pad_index": 0, "seq_len": 256, "num_classes": 2}`.
    Image subclasses also set per-channel `mean` and `std` (in the units of the stored pixels). The optional
    hooks of the data contract (contract.py) are all here: images are read from files for predictions as the
    training images were stored; text subclasses read texts their own way.

    The settings every dataset has are checked here: `batch_size`, `val_size` (the fraction of the training
    part a subclass carves off for validation, with `split_seed`) and `seed` (the order of the batches).
    """

    spec: DataSpec
    pixel_max = 255  # what the stored pixels' brightest value is (the digits: 16)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: list[str] | None = None

    def __init__(
        self,
        batch_size: int,
        val_size: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        normalization: dict | None = None,
    ) -> None:
        super().__init__()
        require(
            "data",
            batch_size=(batch_size, integer(1)),
            val_size=(val_size, number(0.0, 1.0)),
            split_seed=(split_seed, integer(0)),
            seed=(seed, integer(0)),
            normalization=(normalization, mean_and_std),
        )
        check_folds(folds, fold)
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        self.folds, self.fold = folds, fold
        self.normalization = normalization
        self.eval_batch_size = 4 * batch_size  # no gradients to keep: larger batches cost little memory
        self.seed = seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._scale: tuple[torch.Tensor, torch.Tensor] | None = None
        self._resident: bool | None = None  # whether the splits live on the GPU; decided at the first batch
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _batches_done(self) -> int:
        """Training batches of this epoch done: none when an epoch begins, where a resumed run goes on after a
        restore (which comes before its first batch is drawn)."""
        return batches_done(self.trainer) if self.trainer is not None else 0

    def _batches(self, split: str, batch_size: int, training: bool = False) -> TensorBatches:
        """The split's batches for this process: from GPU memory when the data fits there, else pinned."""
        x, y = self.splits[split]
        trainer, pin = self.trainer, False
        if trainer is not None and trainer.strategy.root_device.type == "cuda":
            device = trainer.strategy.root_device
            if self._resident is None:
                nbytes = sum(t.nbytes for pair in self.splits.values() for t in pair)
                self._resident = fits_on_device(nbytes, torch.cuda.mem_get_info(device)[0])
            if self._resident:
                if split not in self._on_device:
                    self._on_device[split] = (x.to(device), y.to(device))
                x, y = self._on_device[split]
            else:
                pin = True
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        start = self._batches_done if training else lambda: 0
        return TensorBatches(x, y, batch_size, training, self.seed, self._current_epoch, rank, world_size, pin, start)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.batch_size, training=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size)

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("predict" if "predict" in self.splits else "test", self.eval_batch_size)

    def predict_on(self, inputs: torch.Tensor) -> None:
        """What the predict loader yields from now on (with placeholder labels): new inputs, or a split's."""
        self.splits["predict"] = (inputs, torch.zeros(len(inputs), dtype=torch.long))

    def encode_inputs(self, items: list) -> torch.Tensor:
        """Image files -> uint8 images of the spec's shape, as the splits hold them (normalised on the device)."""
        if self.spec["kind"] != "image":
            raise UserError(f"{type(self).__name__} holds texts: it needs its own encode_inputs")
        if self.mean is None:  # normalisation statistics computed from the training images: as in training
            self.setup("predict")
        return read_images([Path(item) for item in items], self.spec["shape"], strict=True)[0]

    def training_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.setup("fit")
        return self.splits["train"]

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Our batches are always (inputs, labels): moved directly, not by Lightning's generic walk over
        # any nesting of collections, which costs a small net several percent of its step time.
        x, y = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.spec["kind"] == "image":
            x = self.normalize(x)
            if self.trainer is not None and self.trainer.training:
                x = self.augment(x)
        elif self.spec["kind"] == "text":
            return x.long(), y.long()
        if self.trainer is not None:
            # bf16-true, 16-true, 64-true: the float inputs the weights expect (Lightning's call saw uint8)
            x = self.trainer.precision_plugin.convert_input(x)
        return x, y if y.is_floating_point() else y.long()  # a regression's numbers, or class ids

    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The per-channel mean and std images are normalised with, in the units of the stored pixels: the data's
        own (`mean`, `std`), or `normalization`'s (0..1 units, e.g. the ImageNet figures pretrained weights expect;
        their average for grey images), scaled to the pixels' range (`pixel_max`)."""
        if self.normalization is None:
            if self.mean is None:
                self.setup("predict")  # computed from the training images when the data is read
            return self.mean, self.std
        channels = self.spec["shape"][0]
        mean, std = (list(self.normalization[key]) for key in ("mean", "std"))
        if len(mean) != channels:
            mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
        return tuple(m * self.pixel_max for m in mean), tuple(s * self.pixel_max for s in std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel, as x * (1 / std) + (-mean / std) in place on the new float copy.

        In place, not `torch.addcmul`: its broadcasting kernel takes three to four times as long on a CPU.
        """
        if self._scale is None or self._scale[0].device != x.device:  # copied to the device once, not per batch
            mean, std = self.statistics()
            scale = 1 / torch.tensor(std, device=x.device).view(1, -1, 1, 1)
            self._scale = (scale, -torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * scale)
        scale, shift = self._scale
        return x.to(torch.float32, copy=True).mul_(scale).add_(shift)  # a copy even if x is float already

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time augmentation of a normalised batch, on its device; none by default."""
        return x

    def preprocessing(self) -> nn.Module:
        """What an evaluation batch goes through before the net, as a module (contract.py): uint8 or float pixels
        normalised as `normalize` does, or token ids made int64."""
        if self.spec["kind"] != "image":
            return TokenIds()
        mean, std = self.statistics()
        return Normalize(mean, std)


class Normalize(nn.Module):
    """Images (B, C, H, W) of pixels, uint8 or float, in the units they were stored in -> float32, normalised per
    channel with the same arithmetic as `InMemoryDataModule.normalize`, so the two agree to the last bit."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        scale = 1 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) * self.scale + self.shift


class TokenIds(nn.Module):
    """Token ids (B, L), right-padded, of any integer type -> int64, what the nets' embeddings take."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.int64)
