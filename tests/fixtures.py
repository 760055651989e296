"""Tiny datasets written in the exact official on-disk formats, with a pattern a model can learn.

MNIST: gzip IDX files in MNIST/raw/; CIFAR-10: pickled python batches inside cifar-10-python.tar.gz;
IMDB: the aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt tree inside aclImdb_v1.tar.gz.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def learnable_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a bright band whose row depends on the label: separable, but not trivially."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
    height = shape[-2]
    for i, label in enumerate(labels):
        row = int(label) * (height - 2) // 9
        images[i, ..., row : row + 2, :] = 250
    return images, labels


def write_mnist(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = learnable_images(n, (28, 28), seed)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as file:
            file.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as file:
            file.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return raw


def cifar_batch(images: np.ndarray, labels: np.ndarray, name: str) -> bytes:
    """One batch as the official files hold it: a dict with byte-string keys, (N, 3072) uint8 rows."""
    batch = {
        b"batch_label": name.encode(),
        b"labels": [int(label) for label in labels],
        b"data": np.ascontiguousarray(images.reshape(len(images), -1)),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar10(root: Path, per_batch: int = 100, n_test: int = 200) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(5):
            images, labels = learnable_images(per_batch, (3, 32, 32), seed=i)
            add_file(tar, f"cifar-10-batches-py/data_batch_{i + 1}", cifar_batch(images, labels, f"batch {i + 1}"))
        images, labels = learnable_images(n_test, (3, 32, 32), seed=9)
        add_file(tar, "cifar-10-batches-py/test_batch", cifar_batch(images, labels, "test"))
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        add_file(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": names}, protocol=2))
    return archive


POSITIVE = ["great", "wonderful", "loved", "brilliant", "moving", "superb"]
NEGATIVE = ["awful", "boring", "hated", "terrible", "dull", "worst"]
FILLER = ["the", "film", "movie", "plot", "actor", "scene", "was", "and", "a", "it", "of", "this", "story"]


def review(rng: np.random.Generator, positive: bool) -> str:
    words = list(rng.choice(FILLER, 22)) + list(rng.choice(POSITIVE if positive else NEGATIVE, 8))
    rng.shuffle(words)
    return " ".join(words[:15]) + ".<br /><br />" + " ".join(words[15:]).capitalize() + "!"


def write_imdb(root: Path, per_folder: int = 60) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "aclImdb_v1.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(archive, "w:gz") as tar:
        add_file(tar, "aclImdb/README", b"Large Movie Review Dataset (fixture)\n")
        for split in ("train", "test"):
            for sentiment in ("neg", "pos"):
                for i in range(per_folder):
                    rating = rng.integers(7, 11) if sentiment == "pos" else rng.integers(1, 5)
                    text = review(rng, sentiment == "pos").encode()
                    add_file(tar, f"aclImdb/{split}/{sentiment}/{i}_{rating}.txt", text)
    return archive
