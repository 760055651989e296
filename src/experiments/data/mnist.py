"""MNIST: the official gzip IDX files, found or downloaded in torchvision's layout (`data_dir/MNIST/raw/`)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from experiments.core.rules import require
from experiments.data.augmentation import shifts_within, translate_and_flip
from experiments.data.downloaded import DownloadedDataModule, Split
from experiments.data.files import DamagedFile, fetch_or_explain, gunzip

IMAGES, LABELS = (2051, (28, 28)), (2049, ())  # IDX magic number and the shape of one item


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> torch.Tensor:
    """An uncompressed IDX file of unsigned bytes -> a uint8 tensor, after checking its header against its size."""
    data = path.read_bytes()
    header = 4 * (2 + len(item_shape))
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        raise DamagedFile(f"{path} is not an MNIST IDX file (its magic number is not {magic})", path, _gz(path))
    count, *shape = struct.unpack(f">{1 + len(item_shape)}I", data[4:header])
    if tuple(shape) != item_shape or len(data) - header != count * math.prod(item_shape):
        raise DamagedFile(
            f"{path} is damaged: its header promises {count} items of shape {tuple(shape)}, "
            f"it holds {len(data) - header} bytes of them",
            path,
            _gz(path),
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(count, *item_shape)


def _gz(path: Path) -> Path:
    return path.with_name(path.name + ".gz")


class MNISTDataModule(DownloadedDataModule):
    """60,000 training images (minus a validation part carved with `split_seed`) and the 10,000 test images.

    Files a user already has are used as they are; downloads are checked against the official md5
    (torchvision's list of mirrors and checksums). Training batches may get random translations (`translate`
    pixels; off by default). No flips: a mirrored digit is another glyph.
    """

    spec = {"kind": "image", "shape": [1, 28, 28], "num_classes": 10}
    mean, std = (33.32,), (78.57,)  # of the training pixels, 0..255

    def __init__(self, *, translate: int = 0, **common) -> None:
        super().__init__(**common)
        require("data", translate=(translate, shifts_within(*self.spec["shape"][1:])))
        self.translate = translate

    @property
    def raw(self) -> Path:
        return self.root / "MNIST" / "raw"

    def fetch(self) -> None:
        names = [name for name, _ in MNIST.resources]
        for filename, md5 in MNIST.resources:
            archive, extracted = self.raw / filename, self.raw / filename.removesuffix(".gz")
            if extracted.exists():
                continue
            if not archive.exists():
                urls = [mirror + filename for mirror in MNIST.mirrors]
                fetch_or_explain("MNIST", urls, archive, md5, self.download, names)
            gunzip(archive, extracted)

    def load(self) -> dict[str, Split]:
        return {"train": self._read("train"), "test": self._read("t10k")}

    def _read(self, prefix: str) -> Split:
        images = read_idx(self.raw / f"{prefix}-images-idx3-ubyte", *IMAGES)
        path = self.raw / f"{prefix}-labels-idx1-ubyte"
        labels = read_idx(path, *LABELS).long()
        if len(labels) != len(images) or labels.max() > 9:
            raise DamagedFile(f"{path}: {len(labels)} labels (0..9) for {len(images)} images", path, _gz(path))
        return images.unsqueeze(1), labels

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        # Reflect-padding copies the blank margin that surrounds every MNIST digit (4 pixels or more).
        return translate_and_flip(x, self.translate, flip=False)
