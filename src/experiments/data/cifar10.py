"""CIFAR-10: the official python batches (`data_dir/cifar-10-batches-py/`), read safely, augmented on the device."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from experiments.core.rules import boolean, require
from experiments.data.augmentation import shifts_within, translate_and_flip
from experiments.data.downloaded import DownloadedDataModule, Split
from experiments.data.files import DamagedFile, extract_tar, fetch_or_explain

TRAIN_BATCHES = [name for name, _ in CIFAR10.train_list]
TEST_BATCHES = [name for name, _ in CIFAR10.test_list]
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


class _ArraysOnly(pickle.Unpickler):
    """The batches are pickles; this unpickler builds numpy arrays and plain containers, never runs code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how Python 2 pickles byte strings
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy"):  # numpy 2 moved numpy.core to numpy._core
            old, new = ("numpy.core", "numpy._core") if NUMPY_2 else ("numpy._core", "numpy.core")
            module = module.replace(old, new)
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (N, 3, 32, 32) uint8 images and int64 labels. Any file in the official format
    is accepted, not only the official bytes (torchvision's reader insists on their md5)."""
    damaged = path.parent, path.parent.parent / CIFAR10.filename  # the folder, and the archive it came from
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnly(file, encoding="bytes").load()
        data, labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise DamagedFile(f"{path} is not a CIFAR-10 batch ({error})", *damaged) from error
    # Checked, not converted: float pixels or another row length would otherwise be cast and reshaped silently.
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DamagedFile(f"{path} holds {found} data, not uint8 rows of 3x32x32 pixels", *damaged)
    if len(data) != len(labels) or labels.ndim != 1 or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DamagedFile(f"{path}: {len(data)} images but {len(labels)} labels in 0..9", *damaged)
    return data.reshape(-1, 3, 32, 32), labels


class CIFAR10DataModule(DownloadedDataModule):
    """50,000 training images (minus a validation part carved with `split_seed`), 10,000 test images.

    Training batches get random translation (`translate` pixels, reflect-padded) and horizontal flips,
    drawn per image, on the whole batch on its device.
    """

    spec = {"kind": "image", "shape": [3, 32, 32], "num_classes": 10}
    mean = (125.31, 122.95, 113.87)  # per channel, of the training pixels, 0..255
    std = (62.99, 62.09, 66.70)

    def __init__(self, *, batch_size: int = 256, flip: bool = True, translate: int = 4, **common) -> None:
        super().__init__(batch_size=batch_size, **common)
        require("data", flip=(flip, boolean), translate=(translate, shifts_within(*self.spec["shape"][1:])))
        self.folder = self.root / CIFAR10.base_folder
        self.flip, self.translate = flip, translate

    def fetch(self) -> None:
        missing = [name for name in TRAIN_BATCHES + TEST_BATCHES if not (self.folder / name).exists()]
        if not missing:
            return
        archive = self.root / CIFAR10.filename
        if not archive.exists():
            folder = f"{CIFAR10.base_folder}/" + (missing[0] if self.folder.exists() else "")
            expected = [CIFAR10.filename, f"or {folder}"]
            fetch_or_explain("CIFAR-10", [CIFAR10.url], archive, CIFAR10.tgz_md5, self.download, expected)
        # Replaces a folder that lacks batches.
        extract_tar(archive, self.root, CIFAR10.base_folder, required=TRAIN_BATCHES + TEST_BATCHES)

    def load(self) -> dict[str, Split]:
        return {"train": self._read(TRAIN_BATCHES), "test": self._read(TEST_BATCHES)}

    def _read(self, names: list[str]) -> Split:
        images, labels = zip(*(read_batch(self.folder / name) for name in names), strict=True)
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return translate_and_flip(x, self.translate, self.flip)
