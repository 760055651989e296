"""Image files decoded batch by batch, for folders too big to hold in memory: a `Dataset` of files read through a
`DataLoader`'s worker processes, each image decoded exactly as the in-memory path decodes it (images.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from experiments.core.errors import UserError, first_line
from experiments.data.images import read_image

log = logging.getLogger(__name__)

# What Pillow raises for a file that is not an image, or is a broken one (as images.read_images catches).
NOT_AN_IMAGE = (OSError, ValueError, SyntaxError)


class UnreadableImage(UserError):
    """An image whose pixels turn out unreadable mid-epoch, though its header was fine when the run started.

    Raised in a loader's worker process, it reaches the run re-raised by torch with the worker's whole traceback
    as its message: only the line written here, the traceback's last, is kept, so that the run ends in one line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.rstrip().splitlines()[-1].removeprefix(f"{__name__}.{type(self).__name__}: "))


class ImageFiles(Dataset):
    """(uint8 image of `shape`, class id) of each file, decoded when asked for."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], shape: Sequence[int]) -> None:
        self.paths, self.labels, self.shape = list(paths), list(labels), list(shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            return read_image(self.paths[i], self.shape), self.labels[i]
        except NOT_AN_IMAGE as error:
            reason = first_line(str(error)) or type(error).__name__
            raise UnreadableImage(f"{self.paths[i]} is not a readable image ({reason}); remove it") from error


def recognised(paths: Sequence[Path], strict: bool) -> list[int]:
    """Indices of the files that Pillow recognises as images by their header, none decoded: a check of a whole
    folder in the time it takes to open its files. The others are skipped and counted in one warning, or,
    `strict`, refused in one line that names the first."""
    from PIL import Image

    def problem(path: Path) -> str | None:
        try:
            with Image.open(path):
                return None
        except NOT_AN_IMAGE as error:
            return first_line(str(error)) or type(error).__name__

    with ThreadPoolExecutor() as pool:
        problems = list(pool.map(problem, paths))
    skipped = [i for i, found in enumerate(problems) if found is not None]
    if skipped and strict:
        first = skipped[0]
        raise UserError(f"{paths[first]} is not a readable image ({problems[first]}); remove it, or set strict=false")
    if skipped:
        log.warning(
            "skipped %d file(s) that are not readable images, e.g. %s (strict=true refuses them instead)",
            len(skipped),
            paths[skipped[0]],
        )
    if len(skipped) == len(paths):
        raise UserError(f"none of the {len(paths)} images is a readable image")
    return [i for i, found in enumerate(problems) if found is None]


def loader(dataset: ImageFiles, batch_size: int, shuffle: bool, seed: int, num_workers: int, pin: bool) -> DataLoader:
    """Batches of (uint8 images, class ids), decoded in `num_workers` processes that live as long as the loader;
    shuffled in a fresh order each epoch, the same orders for the same seed."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin,
    )
