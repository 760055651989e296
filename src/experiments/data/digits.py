"""scikit-learn's 8x8 handwritten digits: 1,797 images bundled with scikit-learn, so runs work offline."""

from __future__ import annotations

import numpy as np
import torch

from experiments.data.folds import fold_indices
from experiments.data.in_memory import InMemoryDataModule, check_held_out


class DigitsDataModule(InMemoryDataModule):
    """Digits 0-9 as 1x8x8 images with pixel values 0..16, split into train/val/test from `split_seed` (or `seed`).

    `data_dir`, which every dataset takes, is ignored: the images ship with scikit-learn.
    """

    spec = {"kind": "image", "shape": [1, 8, 8], "num_classes": 10}
    pixel_max = 16

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: float = 0.15,
        test_size: float = 0.15,
        split_seed: int | None = None,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        normalization: dict | None = None,
    ) -> None:
        split_seed = seed if split_seed is None else split_seed
        super().__init__(
            batch_size=batch_size,
            val_size=val_size,
            split_seed=split_seed,
            seed=seed,
            folds=folds,
            fold=fold,
            normalization=normalization,
        )
        check_held_out(val_size, test_size)
        self.test_size = test_size

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = digits.images.astype(np.uint8)[:, None]  # (N, 1, 8, 8), values 0..16
        y = digits.target.astype(np.int64)
        holdout, seed = self.val_size + self.test_size, self.split_seed
        x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=holdout, stratify=y, random_state=seed)
        x_val, x_test, y_val, y_test = train_test_split(
            x_rest, y_rest, test_size=self.test_size / holdout, stratify=y_rest, random_state=seed
        )
        if self.folds is not None:  # the folds partition training and validation together; the test stays
            x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
            train, val = (rows.numpy() for rows in fold_indices(y_train, self.folds, self.fold, seed))
            x_train, x_val, y_train, y_val = x_train[train], x_train[val], y_train[train], y_train[val]
        self.mean = (float(x_train.mean()),)
        self.std = (float(x_train.std()),)
        for name, (xs, ys) in {
            "train": (x_train, y_train),
            "val": (x_val, y_val),
            "test": (x_test, y_test),
        }.items():
            self.splits[name] = (torch.from_numpy(xs), torch.from_numpy(ys))
