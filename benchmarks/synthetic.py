"""The project's own DataModules filled with random data of the real shapes, for benchmarks without the files.

Only `setup` differs from the real modules: batching, transfer, normalisation and augmentation are
theirs, so a benchmark of the project path measures exactly what a user's run does.
"""

from __future__ import annotations

import torch

from experiments.data import CIFAR10DataModule, IMDBDataModule, MNISTDataModule

SIZES = {"train": 50_000, "test": 10_000}  # before the validation part is carved off the training set


def _split(x: torch.Tensor, y: torch.Tensor, val_size: float) -> dict:
    cut = round(val_size * len(y))
    return {"train": (x[cut:], y[cut:]), "val": (x[:cut], y[:cut])}


def random_images(n: int, shape: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator), torch.randint(
        0, 10, (n,), generator=generator
    )


def random_reviews(n: int, seq_len: int, vocab_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Token ids right-padded with 0; lengths log-normal around 230 tokens, as the real reviews (cut at seq_len)."""
    lengths = (torch.randn(n, generator=generator) * 0.6 + 5.44).exp().clamp(10, seq_len).long()
    ids = torch.randint(2, vocab_size, (n, seq_len), dtype=torch.int32, generator=generator)
    ids[torch.arange(seq_len) >= lengths[:, None]] = 0
    return ids, torch.randint(0, 2, (n,), generator=generator)


class Synthetic:
    """Mixed in front of a real DataModule: no files to fetch, and random splits from `random_splits`."""

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.random_splits(torch.Generator().manual_seed(0))


class SyntheticImages(Synthetic):
    def random_splits(self, generator: torch.Generator) -> dict:
        n = SIZES["train"] + (10_000 if self.spec["shape"][0] == 1 else 0)  # MNIST has 60,000 training images
        splits = _split(*random_images(n, self.spec["shape"], generator), self.val_size)
        return {**splits, "test": random_images(SIZES["test"], self.spec["shape"], generator)}


class SyntheticMNIST(SyntheticImages, MNISTDataModule):
    pass


class SyntheticCIFAR10(SyntheticImages, CIFAR10DataModule):
    pass


class SyntheticIMDB(Synthetic, IMDBDataModule):
    def random_splits(self, generator: torch.Generator) -> dict:
        seq_len, vocab_size = self.spec["seq_len"], self.spec["vocab_size"]
        splits = _split(*random_reviews(25_000, seq_len, vocab_size, generator), self.settings["val_size"])
        return {**splits, "test": random_reviews(25_000, seq_len, vocab_size, generator)}
