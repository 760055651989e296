"""The path every downloaded dataset takes: fetch its files once, load them whole, carve off a validation part."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from experiments.core.rules import boolean, require
from experiments.data.files import refetching_damaged
from experiments.data.in_memory import InMemoryDataModule, split_off

Split = tuple[torch.Tensor, torch.Tensor]


class DownloadedDataModule(InMemoryDataModule, ABC):
    """A dataset read from files in `data_dir`, downloaded there when missing and `download` allows.

    A subclass says how to `fetch` its files and how to `load` them; a `DamagedFile` raised by either gets
    the file deleted and fetched afresh, once, when `download` allows. Subclasses with keys of their own
    take these common ones as `**common` and pass them on.
    """

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 128,
        val_size: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        normalization: dict | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            val_size=val_size,
            split_seed=split_seed,
            seed=seed,
            folds=folds,
            fold=fold,
            normalization=normalization,
        )
        require("data", download=(download, boolean))
        self.root = Path(data_dir)
        self.download = download

    @abstractmethod
    def fetch(self) -> None:
        """Download and unpack whatever `load` reads and is missing; a no-op when it is all there."""

    @abstractmethod
    def load(self) -> dict[str, Split]:
        """{"train": (x, y), "test": (x, y)} from the files, and "val" too if the dataset carves its own."""

    def prepare_data(self) -> None:  # on one process per machine, before any `setup`
        refetching_damaged(self.fetch, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return

        def fetch_and_load() -> dict[str, Split]:
            self.fetch()  # a no-op after prepare_data(); lets setup() work without a Trainer
            return self.load()

        loaded = refetching_damaged(fetch_and_load, self.download)
        if "val" not in loaded:  # carved with its own seed, so that it stays put when `seed` changes
            carved = split_off(*loaded["train"], self.val_size, self.split_seed, self.folds, self.fold)
            loaded["train"], loaded["val"] = carved
        self.splits = {name: loaded[name] for name in ("train", "val", "test")}
