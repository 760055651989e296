"""Every place we rely on Lightning beyond its public API, in one module.

Two kinds, each named after what it relies on, and each checked against the installed Lightning by
tests/test_lightning_internals.py, so that a release that changes one fails there, by name, and not
somewhere in the middle of a run:

- **The fast path** (`fast_path: true`, the default): what brings a small net's training step close to
  a plain PyTorch loop (docs/benchmarks.md). `fast_path=false` trains with plain Lightning: its automatic
  optimisation, its default profiler, its hook bookkeeping. Both train to the same weights.
- **Exact resume**, always on: where the training loop stands within its epoch, and ModelCheckpoint's
  saving of `last.ckpt` at a moment of our choosing, for which Lightning has no public API.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.profilers import PassThroughProfiler

# --- The fast path --------------------------------------------------------------------------------------


class FastPath:
    """A LightningModule's training step without Lightning's per-step bookkeeping, where it is not needed.

    Mixed in before the module's class (`class FastModel(FastPath, Model)`); the module's own
    `training_step` computes and returns the loss, as under Lightning's automatic optimisation.
    """

    timed_checkpoints = False  # whether a checkpoint callback saves every n steps or minutes; set in setup
    lightning_schedules = False  # whether the schedule is stepped otherwise than every batch; set with it

    def __setattr__(self, name: str, value) -> None:
        # Relies on: Lightning records the hook it is in as `_current_fx_name` on the module, before and after
        # every hook call, some thirty times a step. nn.Module's __setattr__ first checks whether a value is a
        # parameter, a buffer or a submodule (0.1 ms a step on a 2-core Xeon); a hook's name is none of them.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Read by `automatic_optimization` some ten times a step; the run's callbacks stay as they are.
        self.timed_checkpoints = any(saves_within_epochs(c) for c in self.trainer.callbacks)

    @property
    def automatic_optimization(self) -> bool:
        """Whether Lightning takes the optimiser step: only for what its automatic optimisation alone does well.

        Lightning's automatic optimisation wraps each step in a closure and a dozen hook calls: about a
        third of a millisecond of host time per step on a 2-core Xeon, a tenth of a small MLP's step.
        A plain step (zero the gradients, backward, step, schedule) needs none of it. Left to Lightning:
        schedules stepped otherwise than every batch (once an epoch, on a metric), gradient clipping and
        accumulation, which it allows in its automatic mode only, and checkpoints
        saved every n training steps or minutes, which Lightning 2.6's ModelCheckpoint handles under its
        automatic mode only (under manual optimisation it ignores the time interval, and warns at every
        save about model states it expects the module to keep).
        """
        trainer = self._trainer
        if trainer is None:
            return False
        # Clipping and accumulation are read from the Trainer itself: Lightning asks, to refuse them under
        # manual optimisation, before `setup` has run.
        return (
            bool(trainer.gradient_clip_val)
            or trainer.accumulate_grad_batches != 1
            or self.timed_checkpoints
            or self.lightning_schedules
        )

    def configure_optimizers(self):
        configured = super().configure_optimizers()
        # A schedule stepped once an epoch, or on a metric (ReduceLROnPlateau), is Lightning's to step.
        schedule = configured.get("lr_scheduler") if isinstance(configured, dict) else None
        self.lightning_schedules = schedule is not None and (schedule["interval"] != "step" or "monitor" in schedule)
        return configured

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if not self.automatic_optimization:
            # Through Lightning's optimiser wrapper and manual_backward: precision plugins (loss scaling),
            # data-parallel gradient sync, step counting and the on_before_optimizer_step hooks all apply.
            optimizer = self.optimizers()
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()
        return loss


# Relies on: Lightning reads `training_step`'s signature at every step, to see whether it takes `batch_idx`;
# `inspect` answers from `__signature__` when a function has one instead of building it anew (7-11 us against
# 19-32 us a step on a 2-core Xeon: benchmarks/hook_overhead.py).
FastPath.training_step.__signature__ = inspect.signature(FastPath.training_step)


def saves_within_epochs(callback: L.Callback) -> bool:
    """Whether `callback` is a ModelCheckpoint that saves every n training steps or minutes.
    Relies on: ModelCheckpoint keeps those settings as `_every_n_train_steps` and `_train_time_interval`."""
    if not isinstance(callback, ModelCheckpoint):
        return False
    return callback._every_n_train_steps > 0 or callback._train_time_interval is not None


def count_steps_in_both_modes(checkpoint: dict) -> None:
    """Lightning counts optimiser steps (the global step) apart for its automatic and manual modes, and a run
    resumed in the other mode (gradient clipping or accumulation switched, `fast_path` switched) would start
    counting from zero: both counters of the checkpoint are set to the steps taken. The loops read their state
    after the module's `on_load_checkpoint`, from the same dictionary.
    Relies on: the fit loop's state keys for the two modes' progress."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    automatic = loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).get("step")
    manual = loop.get("epoch_loop.manual_optimization.optim_step_progress")
    if automatic is None or manual is None:
        return
    for part in ("total", "current"):
        for key in ("ready", "completed"):
            automatic[part][key] = manual[part][key] = max(automatic[part][key], manual[part][key])


_NOTHING = nullcontext()  # reusable and reentrant: it holds no state


class NoProfiler(PassThroughProfiler):
    """The profiler of a fast-path run that asks for none (`trainer.profiler: null`).

    Relies on: Lightning wraps every hook call in `trainer.profiler.profile(name)`, 57-58 times a training step
    in a default run of an MNIST MLP, and its default profiler, which records nothing, still builds a
    generator-based context manager for each: 1.6-2.8 us a call against 0.3-0.6 us for a shared `nullcontext`
    on a 2-core Xeon (benchmarks/hook_overhead.py).
    """

    def profile(self, action_name: str) -> nullcontext:
        return _NOTHING


# --- Exact resume ---------------------------------------------------------------------------------------


def batches_done(trainer: L.Trainer) -> int:
    """Training batches of the current epoch done, optimiser step included; after a restore, the batches the
    resumed epoch had done. Relies on: the training epoch loop's `batch_progress`."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def at_last_batch(trainer: L.Trainer) -> bool:
    """Whether the training batch being finished is the epoch's last. Relies on: `batch_progress.is_last_batch`."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def save_last(callback: ModelCheckpoint, trainer: L.Trainer, again: bool = False) -> bool:
    """`callback`'s last checkpoint now, as ModelCheckpoint writes it at its own save points; skipped (False) when
    this very step is saved already (unless `again`), or in a sanity check or a dev run.
    Relies on: ModelCheckpoint's `_last_global_step_saved`, `_should_skip_saving_checkpoint`,
    `_monitor_candidates` and `_save_last_checkpoint`."""
    if again:
        callback._last_global_step_saved = -1
    if callback._should_skip_saving_checkpoint(trainer):
        return False
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
    return True
