"""What a run shows while it trains: its throughput and its progress. (Lightning
ships checkpointing, early stopping and the LR monitor; ours for checkpoints are in run/recovery.py.)

A callback that logs metrics of its own names them in `logged_metrics`, so that a run may select on them
(`objective=`), checked with the module's own before anything runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar


def logged_by(callbacks: Iterable[L.Callback]) -> list[str]:
    """The metrics these callbacks say they log (their `logged_metrics`)."""
    return [name for callback in callbacks for name in getattr(callback, "logged_metrics", ())]


class Throughput(L.Callback):
    """Training samples per second, timed over the training batches only (validation excluded).

    The first epoch carries the warm-up (allocations, cuDNN autotuning, lazy inits), so once a run
    has more than one epoch the figure covers the later ones only: the steady state a benchmark sees.
    The clock runs from the epoch's start (fetching batches included) and stops for validation and
    whatever follows it (checkpoints); after a validation within an epoch it starts again with the
    next training batch. Under data parallelism the figure counts the samples of all processes.
    Logged per epoch as `train/samples_per_s`; the run's figure is `samples_per_second`.
    """

    logged_metrics = ("train/samples_per_s",)

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


class ProgressBar(RichProgressBar):
    """Rich's live bars on a terminal; elsewhere (CI, SLURM or piped logs) one plain line per epoch instead."""

    SHOWN = ("loss",)  # and the task's headline metric (accuracy, RMSE), for training and validation

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
            task = getattr(pl_module, "task", None)
            names = (*self.SHOWN, task.headline[0]) if task is not None else self.SHOWN
            keys = [f"{stage}/{name}" for stage in ("train", "val") for name in names]
            shown = [f"{key} {float(metrics[key]):.4f}" for key in keys if key in metrics]
            seconds = time.perf_counter() - self._epoch_started
            print(
                f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {'  '.join(shown)}  ({seconds:.1f} s)",
                flush=True,
            )
