"""Image files -> the uint8 tensors our image splits hold: decoded, converted to the channels, resized once.

Shared by the image-folder dataset (a whole folder, once, into its cache) and by predictions on new files
(any image data module), so a new image goes through exactly what the training images went through.
Decoded by Pillow (torchvision's own dependency), which reads every common format; in threads, as
Pillow's decoders release the GIL, with a progress bar on long lists.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from experiments.core.errors import UserError

log = logging.getLogger(__name__)

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PROGRESS_FROM = 2000  # files: a progress bar from this many on


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder`, at any depth, in a fixed order (hidden files and folders left out)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def read_image(path: Path, shape: Sequence[int]) -> torch.Tensor:
    """One file -> a (C, H, W) uint8 tensor of `shape`: grey (C=1) or RGB (C=3), resized (Lanczos, antialiased)
    when its size differs. Raises OSError (Pillow's UnidentifiedImageError among them) for what is no image."""
    from PIL import Image

    channels, height, width = shape
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        pixels = np.array(image, dtype=np.uint8)  # a copy of its own: Pillow's buffer is read-only
    return torch.from_numpy(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1).copy())


def read_images(
    paths: Sequence[Path], shape: Sequence[int], strict: bool = False, what: str = "images"
) -> tuple[torch.Tensor, list[int]]:
    """Many files -> an (N, C, H, W) uint8 tensor of those that are images, and the indices of those kept.

    A file that is not a readable image is skipped and counted in one warning, or, `strict`, refused in one
    line that names it."""
    from tqdm import tqdm

    def read(path: Path) -> torch.Tensor | str:
        try:
            return read_image(path, shape)
        except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for broken or foreign files
            return str(error).splitlines()[0] if str(error) else type(error).__name__

    images, kept, skipped = [], [], []
    with ThreadPoolExecutor() as pool:
        results = pool.map(read, paths)
        shown = tqdm(results, total=len(paths), desc=f"decoding {what}", disable=len(paths) < PROGRESS_FROM)
        for i, (path, result) in enumerate(zip(paths, shown, strict=True)):
            if isinstance(result, str):
                if strict:
                    raise UserError(f"{path} is not a readable image ({result}); remove it, or set strict=false")
                skipped.append(path)
            else:
                images.append(result)
                kept.append(i)
    if skipped:
        log.warning(
            "skipped %d file(s) that are not readable images, e.g. %s (strict=true refuses them instead)",
            len(skipped),
            skipped[0],
        )
    if not images:
        raise UserError(f"none of the {len(paths)} {what} is a readable image")
    return torch.stack(images), kept
