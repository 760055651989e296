"""Training-time augmentation of whole image batches on their device, drawn per image: CIFAR-10's and any image
folder's random translations (reflect-padded) and horizontal flips."""

from __future__ import annotations

import torch

from experiments.core.rules import Rule, integer


def shifts_within(height: int, width: int) -> Rule:
    """The rule of `translate` for images of that size: reflect-padding needs padding narrower than the image."""
    return integer(0, min(height, width) - 1)


def translate_and_flip(x: torch.Tensor, translate: int, flip: bool) -> torch.Tensor:
    """Each image of the (N, C, H, W) batch shifted by up to `translate` pixels each way, then mirrored at random."""
    n, _, height, width = x.shape
    if translate:
        padded = torch.nn.functional.pad(x, (translate,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * translate + 1, (n, 1, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * translate + 1, (n, 1, 1, 1), device=x.device)
        x = crop(padded, dy, dx, height, width)
    if flip:
        flipped = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
        x = torch.where(flipped, x.flip(3), x)
    return x


def crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-image crops of `padded` at offsets (dy, dx), each (N, 1, 1, 1), as two gathers."""
    n, channels, _, padded_width = padded.shape
    rows = torch.arange(height, device=padded.device).view(1, 1, -1, 1) + dy
    padded = padded.gather(2, rows.expand(n, channels, height, padded_width))
    cols = torch.arange(width, device=padded.device).view(1, 1, 1, -1) + dx
    return padded.gather(3, cols.expand(n, channels, height, width))
