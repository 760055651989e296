"""CIFAR-10 with alternating flips, for the speedrun recipe (conf/experiment/cifar10_speedrun.yaml).

A coin toss per image per epoch shows some images in the same orientation several epochs running.
Alternating flips (from the airbench94 recipe's description) fix a random half of the images to start
mirrored and flip every image in every other epoch: each pair of consecutive epochs shows each image
both ways. The flip is applied to the whole (on-device) training split once per epoch, so the trainer
must reload its training batches every epoch (`trainer.reload_dataloaders_every_n_epochs=1`).
"""

from __future__ import annotations

import torch

from experiments.data.cifar10 import CIFAR10DataModule
from experiments.data.in_memory import TensorBatches


class AlternatingFlipCIFAR10(CIFAR10DataModule):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flip = False  # random per-batch flips off: the alternation replaces them

    def train_dataloader(self) -> TensorBatches:
        batches = super().train_dataloader()
        n = len(batches.y)
        starts_mirrored = torch.rand(n, generator=torch.Generator().manual_seed(self.seed)) < 0.5
        mirrored = (starts_mirrored ^ bool(self._current_epoch() % 2)).to(batches.x.device)
        batches.x = torch.where(mirrored.view(n, 1, 1, 1), batches.x.flip(3), batches.x)
        return batches
