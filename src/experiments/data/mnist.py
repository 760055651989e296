"""MNIST: the official gzip IDX files, found or downloaded in torchvision's layout (`data_dir/MNIST/raw/`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from experiments.data.files import fetch_or_explain, gunzip
from experiments.data.in_memory import InMemoryDataModule, split_off


class MNISTDataModule(InMemoryDataModule):
    """60,000 training images (minus a validation part carved with `split_seed`) and the 10,000 test images.

    Files a user already has are used as they are; downloads are checked against the official md5
    (torchvision's list of mirrors and checksums).
    """

    spec = {"kind": "image", "shape": [1, 28, 28], "num_classes": 10}
    mean, std = (33.32,), (78.57,)  # of the training pixels, 0..255

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 128,
        val_size: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        self.raw = Path(data_dir) / "MNIST" / "raw"
        self.download, self.val_size, self.split_seed = download, val_size, split_seed

    def prepare_data(self) -> None:
        names = [name for name, _ in MNIST.resources]
        for filename, md5 in MNIST.resources:
            archive, extracted = self.raw / filename, self.raw / filename.removesuffix(".gz")
            if extracted.exists():
                continue
            if not archive.exists():
                urls = [mirror + filename for mirror in MNIST.mirrors]
                fetch_or_explain("MNIST", urls, archive, md5, self.download, names)
            gunzip(archive, extracted)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()  # a no-op once the files are there; lets setup() work without a Trainer

        def load(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
            images = read_image_file(str(self.raw / f"{prefix}-images-idx3-ubyte"))
            labels = read_label_file(str(self.raw / f"{prefix}-labels-idx1-ubyte"))
            return images.unsqueeze(1), labels

        self.splits["train"], self.splits["val"] = split_off(*load("train"), self.val_size, self.split_seed)
        self.splits["test"] = load("t10k")
