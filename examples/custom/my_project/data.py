"""A data module of one's own, written against the data contract (experiments/data/contract.py) and nothing else
of the package: a plain `Dataset` read through `DataLoader`s, as a set too big for memory would be.

The images are drawn, not downloaded: a filled circle, square or triangle, of random size, place and grey level
on a noisy background, so the example trains anywhere, offline.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from experiments.data.images import read_images

SHAPES = ("circle", "square", "triangle")


def draw(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size x size) uint8 image of shape number `kind`."""
    y, x = np.mgrid[0:size, 0:size]
    r = rng.uniform(0.2, 0.4) * size
    cy, cx = rng.uniform(r, size - r, 2)
    if kind == 0:
        inside = (y - cy) ** 2 + (x - cx) ** 2 <= r**2
    elif kind == 1:
        inside = (abs(y - cy) <= r * 0.8) & (abs(x - cx) <= r * 0.8)
    else:
        inside = (y - cy >= -r) & (y - cy <= r) & (abs(x - cx) <= (y - cy + r) / 2)
    image = rng.normal(40, 15, (size, size))
    image[inside] = rng.uniform(150, 255)
    return image.clip(0, 255).astype(np.uint8)


class Shapes(Dataset):
    """`count` images drawn from `seed`: (1 x size x size float in 0..1, label)."""

    def __init__(self, count: int, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, len(SHAPES), count)
        self.images = np.stack([draw(int(k), size, rng) for k in self.labels])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0), int(self.labels[i])


class ShapesDataModule(L.LightningDataModule):
    class_names = list(SHAPES)

    def __init__(
        self,
        data_dir: str = "data",  # the common keys every data config has; nothing is read or written here
        batch_size: int = 64,
        val_size: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        size: int = 16,
        count: int = 3000,
    ) -> None:
        super().__init__()
        self.batch_size, self.val_size, self.split_seed, self.seed = batch_size, val_size, split_seed, seed
        self.size, self.count = size, count
        self.spec = {"kind": "image", "shape": [1, size, size], "num_classes": len(SHAPES)}
        self.sets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.sets:
            train = Shapes(self.count, self.size, self.split_seed)
            cut = int(self.val_size * self.count)
            self.sets["val"] = torch.utils.data.Subset(train, range(cut))
            self.sets["train"] = torch.utils.data.Subset(train, range(cut, self.count))
            self.sets["test"] = Shapes(self.count // 3, self.size, self.split_seed + 1)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.sets[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # Predictions on new files: the same form the loaders yield (grey, size x size, 0..1).
    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        images, _ = read_images([Path(item) for item in items], self.spec["shape"], strict=True)
        return images.float().div(255)

    def predict_on(self, inputs: torch.Tensor) -> None:
        self.sets["predict"] = TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long))

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
