"""Lookahead on the weights, as a Lightning callback: part of the CIFAR-10 speedrun recipe (docs/speedrun.md)."""

from __future__ import annotations

import lightning as L
import torch


class Lookahead(L.Callback):
    """Lookahead on the weights (Zhang et al., 2019): every `every` optimiser steps, slow weights move
    `1 - decay` of the way towards the fast ones and the fast ones restart from them; training ends on
    the slow weights. A cheap average over the last steps that damps the noise of a short, hot schedule.
    With `warmup_power` p > 0 the decay grows as decay * (step / total steps) ** p, from nothing (the slow
    weights simply follow) to `decay` at the end, as in the airbench recipe (p = 3): early training is not
    held back, the late steps are averaged. The slow weights are not checkpointed: a resumed run starts
    them from the weights it loads.
    """

    def __init__(self, every: int = 5, decay: float = 0.77, warmup_power: float = 0.0) -> None:
        self.every, self.decay, self.warmup_power = every, decay, warmup_power
        self.fast: list[torch.Tensor] = []  # the trained weights, in place: gathered once, not every step
        self.slow: list[torch.Tensor] = []
        self.total_steps = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fast = [p.data for p in pl_module.parameters() if p.requires_grad]
        self.slow = [w.clone() for w in self.fast]
        if self.warmup_power:
            self.total_steps = trainer.estimated_stepping_batches

    def decay_at(self, step: int) -> float:
        if not self.warmup_power:
            return self.decay
        return self.decay * min(step / max(self.total_steps, 1), 1.0) ** self.warmup_power

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every == 0:
            torch._foreach_lerp_(self.slow, self.fast, 1 - self.decay_at(trainer.global_step))
            torch._foreach_copy_(self.fast, self.slow)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch._foreach_copy_(self.fast, self.slow)
