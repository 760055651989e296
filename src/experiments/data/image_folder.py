"""One's own images, one folder per class (torchvision's ImageFolder layout), decoded once into a cache.

    root/<class>/**/*.jpg                          a random `test_size` of the images is the test split
    root/train/<class>/... and root/test/<class>/...   the test split is test/

The class names are the class folders' names, sorted: read when the module is built, as the number of classes
is part of the spec the net is built from, but no image is read then. `setup` decodes every image once
(images.py: Pillow, in threads), resized to `image_size` and converted to `channels`, into a cache of uint8
tensors in `data_dir/image_folder_cache/`, named after every setting that shapes it and the folder's list of
files (paths, sizes, modification times): the folder itself is only read, and a changed folder is decoded
again. The per-channel normalisation statistics come from the training part alone and are kept in the cache
too, so that predictions normalise new images as training did. `stream=true` decodes the images batch by
batch instead (image_stream.py), for folders too big for memory.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from experiments.core.errors import UserError
from experiments.core.rules import boolean, integer, is_integer, require
from experiments.data.augmentation import shifts_within, translate_and_flip
from experiments.data.cache import SettingsCache
from experiments.data.folds import carve, validation_rows
from experiments.data.image_stream import ImageFiles, loader, recognised
from experiments.data.images import image_files, read_images
from experiments.data.in_memory import InMemoryDataModule, check_held_out

CACHE_FORMAT = 1  # bump when decoding or splitting changes, so old caches are not reused
STATISTICS_SAMPLE = 1000  # training images whose pixels give the normalisation statistics, when streaming

log = logging.getLogger(__name__)


def image_sides(value: object) -> str | None:
    """The rule (core/rules.py) of `image_size`: one side for square images, or [height, width]."""
    sides = [value] if is_integer(value) else value
    ok = isinstance(sides, Sequence) and not isinstance(sides, str) and len(sides) in (1, 2)
    ok = ok and (is_integer(value) or len(sides) == 2) and all(is_integer(s) and 1 <= s <= 4096 for s in sides)
    return None if ok else "an integer from 1 to 4096, or [height, width] of them, e.g. 32 or [48,64]"


def grey_or_colour(value: object) -> str | None:
    return None if is_integer(value) and value in (1, 3) else "1 (grey) or 3 (RGB)"


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def layout(root: Path) -> tuple[dict[str, Path], list[str]]:
    """The folders of class folders, {"train": root} or {"train": root/train, "test": root/test}, and the class
    names, those of the training folder's class folders; or one line saying what is wrong with the folder."""
    if not root.is_dir():
        raise UserError(f"data.root={root}: no such folder; give a folder with one subfolder of images per class")
    train, test = root / "train", root / "test"
    if train.is_dir() != test.is_dir():
        has, lacks = ("train", "test") if train.is_dir() else ("test", "train")
        raise UserError(
            f"{root} has {has}/ but no {lacks}/: give it both, each with one folder per class, or "
            f"put the class folders in {root} itself to hold data.test_size of the images out for testing"
        )
    folders = {"train": train, "test": test} if train.is_dir() else {"train": root}
    names = class_folders(folders["train"])
    if len(names) < 2:
        found = f"one class folder ({names[0]})" if names else "no class folders"
        raise UserError(
            f"{folders['train']} holds {found}: a classifier needs two or more, "
            "each a folder of the images of one class named after it"
        )
    if "test" in folders and (extra := sorted(set(class_folders(test)) - set(names))):
        raise UserError(f"{test} has class folders that {train} lacks: {', '.join(extra)}")
    return folders, names


@dataclass(frozen=True)
class Files:
    """Every image file of the folder with its class id, and whether it is one of the test folder's."""

    paths: list[Path]
    labels: list[int]
    in_test_folder: list[bool]


def fingerprint(paths: list[Path], root: Path) -> str:
    """What changes when a file is added, removed, renamed or rewritten: the sha1 of every path, size and mtime."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def split_rows(
    in_test_folder: torch.Tensor,
    test_size: float | None,
    val_size: float,
    seed: int,
    labels: torch.Tensor | None = None,
    folds: int | None = None,
    fold: int = 0,
) -> dict:
    """Row indices of the training, validation and test splits. The test rows are the test folder's, or, without
    one (`test_size` given), a random `test_size` of all; the validation rows are a random `val_size` of the
    rest, carved as every dataset carves its own (folds.carve), so that the same images in the same order
    make the same splits here as in `data=cifar10`; or, with `folds`, fold `fold` of the rest (by `labels`)."""
    rows = torch.arange(len(in_test_folder))
    if test_size is None:
        rows, test = rows[~in_test_folder], rows[in_test_folder]
    else:
        rest, test = carve(len(rows), test_size, seed)
        rows = rows[rest]
    rest_labels = labels[rows] if labels is not None else torch.zeros(len(rows), dtype=torch.long)
    train, val = validation_rows(rest_labels, val_size, seed, folds, fold)
    return {"train": rows[train], "val": rows[val], "test": test}


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of (N, C, H, W) uint8 images in 0..255 units, summed in float64
    a chunk at a time, so that a large set needs no float copy of itself."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(1024):
        pixels = chunk.to(torch.float64)
        total += pixels.sum(dim=(0, 2, 3))
        squares += pixels.square().sum(dim=(0, 2, 3))
    count = images.numel() / channels
    mean = total / count
    return mean.tolist(), (squares / count - mean.square()).clamp(min=0).sqrt().tolist()


class ImageFolderDataModule(InMemoryDataModule):
    """The images of `root`, in a training, a validation and a test split, each image a uint8 tensor of the spec's
    shape. Training batches get random translation (`translate` pixels, reflect-padded) and horizontal flips, as
    CIFAR-10's do. `data_dir` holds the cache."""

    def __init__(
        self,
        *,
        root: str,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: float = 0.1,
        test_size: float = 0.2,
        split_seed: int = 0,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        normalization: dict | None = None,
        image_size: int | Sequence[int] = 32,
        channels: int = 3,
        strict: bool = False,
        flip: bool = True,
        translate: int = 4,
        stream: bool = False,
        num_workers: int = 2,
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
        require("data", image_size=(image_size, image_sides), channels=(channels, grey_or_colour))
        height, width = [image_size] * 2 if is_integer(image_size) else list(image_size)
        require(
            "data",
            strict=(strict, boolean),
            flip=(flip, boolean),
            translate=(translate, shifts_within(height, width)),
            stream=(stream, boolean),
            num_workers=(num_workers, integer(0)),
        )
        self.folder = Path(root).expanduser()
        self.split_folders, self.class_names = layout(self.folder)
        if "test" not in self.split_folders:
            check_held_out(val_size, test_size)
        self.test_size = None if "test" in self.split_folders else test_size
        self.strict = strict
        self.flip, self.translate = flip, translate
        self.stream, self.num_workers = stream, num_workers
        self.cache_dir = Path(data_dir) / "image_folder_cache"
        self.spec = {"kind": "image", "shape": [channels, height, width], "num_classes": len(self.class_names)}
        self.streamed: dict[str, ImageFiles] = {}  # stream=true: the splits' files, decoded batch by batch

    @cached_property
    def files(self) -> Files:
        """Every image file under the class folders, in a fixed order: by split folder, class, then path."""
        paths, labels, in_test = [], [], []
        for split, folder in self.split_folders.items():
            empty = []
            for label, name in enumerate(self.class_names):
                found = image_files(folder / name) if (folder / name).is_dir() else []
                empty += [] if found else [name]
                paths += found
                labels += [label] * len(found)
                in_test += [split == "test"] * len(found)
            if empty and split == "train":  # a class may be missing from a test folder, never from training
                names = ", ".join(empty)
                raise UserError(f"class folders with no images in {folder}: {names}; add images or remove them")
        return Files(paths, labels, in_test)

    @cached_property
    def cache(self) -> SettingsCache:
        """The cache of this folder's files with these settings: decoded images, or, streaming, what a run needs."""
        settings = {
            "format": CACHE_FORMAT,
            "root": str(self.folder.resolve()),
            "files": fingerprint(self.files.paths, self.folder),
            "shape": self.spec["shape"],
            "test_size": self.test_size,
            "val_size": self.val_size,
            "split_seed": self.split_seed,
            "strict": self.strict,
        }
        if self.folds is not None:  # only then: caches made before folds keep their names
            settings |= {"folds": self.folds, "fold": self.fold}
        return SettingsCache(self.cache_dir, "statistics" if self.stream else "decoded", settings)

    def prepare_data(self) -> None:  # on one process per machine, before any `setup`: decodes the folder once
        _ = self.cached

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self.streamed:
            return
        cached = self.cached
        self.mean, self.std = tuple(cached["mean"]), tuple(cached["std"])
        if not self.stream:
            self.splits = cached["splits"]
            return
        skipped = set(cached["skipped"])
        kept = [i for i, path in enumerate(self.files.paths) if str(path) not in skipped]
        for name, rows in self._split(kept).items():
            files = [kept[i] for i in rows.tolist()]
            paths, labels = [self.files.paths[i] for i in files], [self.files.labels[i] for i in files]
            self.streamed[name] = ImageFiles(paths, labels, self.spec["shape"])

    @cached_property
    def cached(self) -> dict:
        """The cache's contents, made first if there are none for these files and settings."""
        if self.cache.path.exists() and (cached := self.cache.read()) is not None:
            if cached["skipped"]:  # said again each run, as it was when the folder was decoded
                log.warning(
                    "%d file(s) in %s are not readable images and are left out, e.g. %s (strict=true refuses them)",
                    len(cached["skipped"]),
                    self.folder,
                    cached["skipped"][0],
                )
            return cached
        return self.cache.write(self._statistics() if self.stream else self._decode())

    def _split(self, kept: list[int]) -> dict[str, torch.Tensor]:
        """The splits' rows among the `kept` files (those that are images)."""
        in_test = torch.tensor(self.files.in_test_folder, dtype=torch.bool)[kept]
        labels = torch.tensor(self.files.labels)[kept]
        return split_rows(in_test, self.test_size, self.val_size, self.split_seed, labels, self.folds, self.fold)

    def _decode(self) -> dict:
        """Every image decoded, the three splits, the training part's statistics, and the files left out."""
        files = self.files
        images, kept = read_images(files.paths, self.spec["shape"], self.strict, what=f"images in {self.folder}")
        labels = torch.tensor(files.labels)[kept]
        splits = {
            name: (images.index_select(0, rows), labels.index_select(0, rows))
            for name, rows in self._split(kept).items()
        }
        mean, std = channel_statistics(splits["train"][0])
        skipped = sorted(set(range(len(files.paths))) - set(kept))
        return {"splits": splits, "mean": mean, "std": std, "skipped": [str(files.paths[i]) for i in skipped]}

    def _statistics(self) -> dict:
        """Streaming: the files that are images (by their headers), and the statistics of a random sample of the
        training images, as `STATISTICS_SAMPLE` of them estimate the whole part's closely."""
        files = self.files
        kept = recognised(files.paths, self.strict)
        train = self._split(kept)["train"]
        generator = torch.Generator().manual_seed(self.split_seed)
        sample = train[torch.randperm(len(train), generator=generator)[:STATISTICS_SAMPLE]].tolist()
        images, _ = read_images([files.paths[kept[i]] for i in sample], self.spec["shape"], self.strict)
        mean, std = channel_statistics(images)
        skipped = sorted(set(range(len(files.paths))) - set(kept))
        return {"mean": mean, "std": std, "skipped": [str(files.paths[i]) for i in skipped]}

    def _batches(self, split: str, batch_size: int, training: bool = False):
        if split not in self.streamed:  # in memory, or new inputs to predict (`predict_on`)
            return super()._batches(split, batch_size, training)
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return loader(self.streamed[split], batch_size, training, self.seed, self.num_workers, pin)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return translate_and_flip(x, self.translate, self.flip)
