"""Datasets held in memory as compact tensors; a batch is an index slice, preprocessing runs per batch.

Our datasets are small enough to live in memory whole (uint8 images, integer token ids), so a training
step needs no per-sample Python: `TensorBatches` slices a shuffled index, and the DataModule turns the
batch into float inputs only after it reached its device (`on_after_batch_transfer`), where
normalisation and augmentation run on the whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch


def carve(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of n items split at random into (rest, carved), `fraction` carved; the same for the same seed."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = round(fraction * n)
    return order[cut:], order[:cut]


def split_off(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Carve a random `fraction` off (x, y): (rest, carved)."""
    rest, carved = carve(len(y), fraction, seed)
    return (x[rest], y[rest]), (x[carved], y[carved])


class TensorBatches:
    """Batches `(x[idx], y[idx])` of whole in-memory splits, in a fresh order each epoch when shuffled.

    The order depends only on `seed` and the epoch number, and `state_dict()` records how many batches of
    the epoch the trainer has finished (`finished`), which Lightning keeps in its checkpoints: a run
    resumed mid-epoch goes on with the very next batch, as if it had never stopped.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        finished: Callable[[], int] = lambda: 0,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.finished = finished
        self._resume_from: dict | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch(), "finished": self.finished()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_from = state  # read by the next __iter__, once the epoch counter is restored too

    def _first_batch(self) -> int:
        state, self._resume_from = self._resume_from, None
        if state is not None and state["epoch"] == self.epoch() and 0 < state["finished"] < len(self):
            return state["finished"]
        return 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        first = self._first_batch() * self.batch_size
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch())
            order = torch.randperm(n, generator=generator)
            for start in range(first, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]
        else:  # contiguous slices are views: no copy at all
            for start in range(first, n, self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]


class InMemoryDataModule(L.LightningDataModule):
    """Base for our datasets: subclasses fill `self.splits` in `setup` and describe their input in `spec`.

    `spec` is what a net needs to fit the data, as plain values, e.g.
    `{"kind": "image", "shape": [1, 8, 8], "num_classes": 10}` or
    `{"kind": "text", "vocab_size": 20000, "pad_index": 0, "seq_len": 256, "num_classes": 2}`.
    Image subclasses also set per-channel `mean` and `std` (in the units of the stored pixels).
    """

    spec: dict
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __init__(self, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = 4 * batch_size  # no gradients to keep: larger batches cost little memory
        self.seed = seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._scale: tuple[torch.Tensor, torch.Tensor] | None = None
        self._train_batches: TensorBatches | None = None
        self._resume_from: dict | None = None

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _batches_finished(self) -> int:
        """Training batches of this epoch done, optimiser step included: where a resumed run goes on."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed if self.trainer is not None else 0

    def train_dataloader(self) -> TensorBatches:
        x, y = self.splits["train"]
        self._train_batches = TensorBatches(
            x,
            y,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            epoch=self._current_epoch,
            finished=self._batches_finished,
        )
        if self._resume_from is not None:
            self._train_batches.load_state_dict(self._resume_from)
            self._resume_from = None
        return self._train_batches

    # Lightning hands the train loader its saved state only if it builds the loader after restoring the
    # checkpoint, but a schedule that asks for `trainer.estimated_stepping_batches` builds it before. The
    # datamodule's state is restored first of all, so the loader's position travels here as well.
    def state_dict(self) -> dict:
        return {"train_batches": self._train_batches.state_dict()} if self._train_batches is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_from = state_dict.get("train_batches")

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["test"], self.eval_batch_size)

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.spec["kind"] == "image":
            x = self.normalize(x)
            if self.trainer is not None and self.trainer.training:
                x = self.augment(x)
        else:
            x = x.long()
        return x, y.long()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self._scale is None or self._scale[0].device != x.device:  # copied to the device once, not per batch
            shift = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            self._scale = (shift, torch.tensor(self.std, device=x.device).view(1, -1, 1, 1))
        mean, std = self._scale
        return (x.float() - mean) / std

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time augmentation of a normalised batch, on its device; none by default."""
        return x
