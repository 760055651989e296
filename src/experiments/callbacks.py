"""Callbacks of our own: Lightning ships the rest (checkpointing, early stopping, LR monitor)."""

from __future__ import annotations

import sys
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar


class Throughput(L.Callback):
    """Training samples per second, timed over the training batches only (validation excluded).

    The first epoch carries the warm-up (allocations, cuDNN autotuning, lazy inits), so once a run
    has more than one epoch the figure covers the later ones only: the steady state a benchmark sees.
    The clock runs from the epoch's start (fetching batches included) and stops for validation and
    whatever follows it (checkpoints); after a validation within an epoch it starts again with the
    next training batch. Under data parallelism the figure counts the samples of all processes.
    Logged per epoch as `train/samples_per_s`; the run's figure is `samples_per_second`.
    """

    def __init__(self) -> None:
        self.epochs: list[tuple[int, float]] = []  # (samples, seconds) per finished training epoch
        self._samples = 0
        self._seconds = 0.0
        self._running_since: float | None = None  # None while the clock is stopped

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # a few times per epoch: queued GPU work belongs to the time before it
        return time.perf_counter()

    def _stop(self, trainer: L.Trainer) -> None:
        if self._running_since is not None:
            self._seconds += self._now(trainer) - self._running_since
            self._running_since = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._seconds, self._running_since = 0, 0.0, self._now(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._running_since is None:  # the first batch after a validation within the epoch
            self._running_since = self._now(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._samples += len(batch[1]) * trainer.world_size  # every process steps in lockstep

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)
        self.epochs.append((self._samples, self._seconds))
        if self._seconds > 0:
            pl_module.log("train/samples_per_s", self._samples / self._seconds, sync_dist=True)  # mean of processes

    @property
    def samples_per_second(self) -> float | None:
        steady = self.epochs[1:] or self.epochs
        seconds = sum(s for _, s in steady)
        return sum(n for n, _ in steady) / seconds if seconds > 0 else None


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


class ProgressBar(RichProgressBar):
    """Rich's live bars on a terminal; elsewhere (CI, SLURM or piped logs) one plain line per epoch instead."""

    SHOWN = ("train/loss", "train/acc", "val/loss", "val/acc")

    def __init__(self, refresh_rate: int = 10) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.plain = not sys.stdout.isatty()
        if self.plain:
            self.disable()
        self._epoch_started = time.perf_counter()  # a run resumed mid-epoch skips on_train_epoch_start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.plain and trainer.is_global_zero:
            metrics = trainer.callback_metrics
            shown = [f"{key} {float(metrics[key]):.4f}" for key in self.SHOWN if key in metrics]
            seconds = time.perf_counter() - self._epoch_started
            print(
                f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {'  '.join(shown)}  ({seconds:.1f} s)",
                flush=True,
            )
