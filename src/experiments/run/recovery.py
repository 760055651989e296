"""Crash safety: a run that is stopped, killed or diverges loses nothing, and continues where it stopped.

- `LastCheckpoint` writes `checkpoints/last.ckpt` every `every_n_train_steps` steps, at epoch ends, when
  training ends, and when a stop signal stops the run (stop_signals.py); it carries the random number generators'
  states, so a resumed run draws the same dropout masks and augmentations as one that was never interrupted.
- `ModelCheckpoint` (the best-model one) is Lightning's, with its state key computed once, not a few times
  a step; `LastCheckpoint` builds on it.
- `AtomicCheckpointIO` writes each checkpoint under a temporary name beside it and renames it when complete
  (Lightning's own writer finishes with a copy from the system's temporary folder, in place), and loads
  checkpoints with `weights_only=True` only.
- `StopOnNonFiniteLoss` ends the run when a loss becomes NaN or infinite, naming the step where it did.
- `check_resumable` refuses, in one line, settings that build another net or optimiser than the checkpoint
  holds (`resume=` itself, which continues a run in its own directory with its own config: resume.py).
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.plugins.io import TorchCheckpointIO

from experiments.core.atomic import written_atomically
from experiments.core.errors import NonFiniteLoss, UserError, is_user_error
from experiments.core.lightning_internals import at_last_batch, save_last
from experiments.core.rules import integer, require
from experiments.core.run_dir import RunDir


def rng_states() -> dict:
    """Every generator training draws from, as plain values (tensors, ints, tuples) that load weights-only."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, with its `state_key` computed once. Lightning names each callback by its
    key around each of its hook calls, ten times a step for our two checkpoint callbacks, and
    ModelCheckpoint builds its key anew each time from settings that never change after `__init__` (2-4 us
    a time on a 2-core Xeon: benchmarks/hook_overhead.py). The same class name keeps the key itself, so
    older checkpoints resume."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._state_key = super().state_key

    @property
    def state_key(self) -> str:
        return self._state_key


def fit_stops(trainer: L.Trainer, at_epoch_end: bool) -> bool:
    """Whether the fit stops after this batch or, at an epoch's end, after this epoch: its step limit is
    reached, a stop was asked for (early stopping, `max_time`) and `min_epochs`/`min_steps` are met, or at an
    epoch's end its epoch limit is reached. (Lightning's own test, from the Trainer's public settings.)"""
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return True
    epochs_done = trainer.current_epoch + at_epoch_end
    if (
        trainer.should_stop
        and epochs_done >= (trainer.min_epochs or 0)
        and trainer.global_step >= (trainer.min_steps or 0)
    ):
        return True
    return at_epoch_end and trainer.max_epochs not in (None, -1) and epochs_done >= trainer.max_epochs


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`, what `resume=<run dir>` continues from: every `every_n_train_steps` steps (0: none between
    epoch ends), after each validation within an epoch, at the end of every `every_n_epochs`-th epoch and
    of the last one, and when a stop signal stops the run (stop_signals.py asks it to). Listed after the
    best-model checkpoint, so it records that one's state too. (Its triggers are its own, not Lightning's
    `every_n_*`: Lightning would take the steps under its automatic optimisation only, and the settings would
    change the callback's state key.)"""

    def __init__(self, dirpath: str, every_n_train_steps: int = 0, every_n_epochs: int = 1) -> None:
        require(
            "callbacks.last_checkpoint",
            every_n_train_steps=(every_n_train_steps, integer(0)),
            every_n_epochs=(every_n_epochs, integer(1)),
        )
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, enable_version_counter=False)
        self._steps_between_saves = every_n_train_steps
        self._epochs_between_saves = every_n_epochs

    @property
    def every_n_epochs(self) -> int:
        return self._epochs_between_saves

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # At an epoch's last batch the epoch-end save follows, after validation: the point Lightning resumes from
        # cleanly (one taken just before would carry the whole epoch's metric counts into the next). Training
        # that stops within an epoch is saved here, as it stands mid-epoch: saved at the epoch's end, Lightning
        # would count the epoch as complete, and a resumed run would skip the rest of it.
        epoch_ends = at_last_batch(trainer)
        if not epoch_ends and (self._steps_due(trainer) or fit_stops(trainer, at_epoch_end=False)):
            self.save_now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation within the epoch (`val_check_interval` < 1, or the one Lightning runs when a stop is asked
        # for). Saved even if this step was saved just before it: a resumed run does not repeat the validation,
        # and the best-model file the earlier save names may be gone. The validation after the epoch's last
        # batch is saved with the epoch's end; Lightning's own save here is replaced.
        if not trainer.sanity_checking and not at_last_batch(trainer):
            self.save_now(trainer, again=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates before this hook, so the file holds this epoch's validation, best-model and
        # early-stopping states too.
        epoch_due = (trainer.current_epoch + 1) % self._epochs_between_saves == 0
        if epoch_due or self._steps_due(trainer) or fit_stops(trainer, at_epoch_end=True):
            self.save_now(trainer)

    def _steps_due(self, trainer: L.Trainer) -> bool:
        return self._steps_between_saves > 0 and trainer.global_step % self._steps_between_saves == 0

    def save_now(self, trainer: L.Trainer, again: bool = False) -> None:
        """last.ckpt now, unless this very step is saved already (and not `again`), or the run is a sanity
        check or a dev run."""
        if save_last(self, trainer, again):
            for logger in trainer.loggers:  # the curves up to this checkpoint survive a kill -9 too
                logger.save()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "rng" in state_dict:
            restore_rng_states(state_dict["rng"])


def resume_from(checkpoint: str) -> str | None:
    """What `resume=` takes to continue from `checkpoint`: its run directory, or the file itself outside one."""
    if not checkpoint:
        return None
    try:
        return str(RunDir.of(Path(checkpoint)).path)
    except UserError:
        return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all, and read without unpickling anything but plain values."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Into a file we opened: torch.save given a path reports a full disk as a RuntimeError.
            with written_atomically(path) as temporary, open(temporary, "wb") as file:
                torch.save(checkpoint, file)
        except OSError as error:  # a full disk, a folder made read-only meanwhile: the previous file stays intact
            if not is_user_error(error):
                raise
            raise UserError(f"cannot write the checkpoint {path}: {error.strerror or error}") from error

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location)


def check_resumable(checkpoint: dict, model: torch.nn.Module, optimizer_groups: int) -> None:
    """A run resumed with settings that build another net, or an optimiser with another number of parameter
    groups, cannot take up its checkpoint: one line that says so, before training starts (and before the
    optimiser is built), instead of a traceback from the middle of restoring it."""
    saved, built = checkpoint.get("state_dict", {}), model.state_dict()
    differing = sorted(set(saved) ^ set(built)) or [k for k, v in built.items() if saved[k].shape != v.shape]
    if differing:
        raise UserError(
            f"cannot resume: these settings build a different net than the run's checkpoint ({differing[0]} "
            "differs); resume with the run's own model settings"
        )
    saved_groups = [len(state["param_groups"]) for state in checkpoint.get("optimizer_states", [])]
    # A fine-tuning callback (Lightning's BaseFinetuning) that unfroze a backbone added a group, and puts it back
    # when the run resumes, from what it saved: those groups are what the checkpoint's optimiser state must match.
    added = [
        len(state["internal_optimizer_metadata"].get(0, []))
        for state in checkpoint.get("callbacks", {}).values()
        if isinstance(state, dict) and state.get("internal_optimizer_metadata")
    ]
    optimizer_groups = max([optimizer_groups, *added])
    if saved_groups and saved_groups != [optimizer_groups]:
        raise UserError(
            f"cannot resume: these settings give the optimiser {optimizer_groups} parameter groups, "
            f"the run's checkpoint has {saved_groups[0]}; resume with the run's own optimizer settings"
        )


def init_weights(model: torch.nn.Module, path: str) -> str:
    """`init_from=`: `model` starts from the weights of the checkpoint at `path` (a run's checkpoint, or a net's
    own state dict saved with torch.save), nothing else of it: a new run, its own optimiser and schedule, from
    epoch 0. Weights whose shape differs (a head for another number of classes) keep their fresh values.
    Returns the one line that says what was taken and what was not."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    weights = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if (
        weights is None
        and isinstance(checkpoint, dict)
        and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    ):
        weights = {f"net.{key}": value for key, value in checkpoint.items()}  # a net's own state dict
    if not weights:
        raise UserError(f"init_from={path}: it holds no weights (neither a run's checkpoint nor a state dict)")
    own = model.state_dict()
    fitting = {k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}
    if not fitting:
        example = next(iter(weights))
        raise UserError(f"init_from={path}: none of its weights fit this net (it has {example}, ...); same model?")
    model.load_state_dict(fitting, strict=False)
    reshaped = sorted(k for k in weights if k in own and k not in fitting)
    fresh = sorted(set(own) - set(weights))
    line = f"init_from {path}: {len(fitting)} of the net's {len(own)} tensors loaded"
    if reshaped:
        line += f"; reinitialised, their shape differs: {', '.join(reshaped)}"
    if fresh:
        line += f"; not in the checkpoint, kept fresh: {', '.join(fresh)}"
    return line


def load_checkpoint(path, map_location=None, mmap: bool = False) -> dict:
    """`torch.load(path, weights_only=True)`, with one clear line for a file that is missing, damaged, or
    holds pickled code (which it refuses to run). `mmap` maps the tensors instead of reading them: a
    cheap check of a file that is loaded for real later."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        # torch's message: a paragraph of advice, then what it refused ("Trying to load unsupported GLOBAL ...").
        paragraphs = [p.strip() for p in str(error).split("\n\n") if p.strip()]
        reason = paragraphs[1] if len(paragraphs) > 1 else paragraphs[0] if paragraphs else "pickled objects"
        raise UserError(f"refusing to load {path}: it holds more than plain values ({reason})") from error
    except FileNotFoundError as error:
        raise UserError(f"no checkpoint at {path}") from error
    except (RuntimeError, EOFError, OSError) as error:  # torch reports a truncated zip as a RuntimeError
        raise UserError(f"{path} is not a readable checkpoint ({str(error).splitlines()[0]})") from error


class StopOnNonFiniteLoss(L.Callback):
    """Stops training when a loss is NaN or infinite, naming the step where it was, its epoch and learning rate.

    On the CPU each step's loss is read at once: nothing to wait for. On a GPU, reading a loss would make the
    host wait until the GPU has finished every step queued so far, and then the GPU idle until the host
    queues the next. So the losses stay on the device and go to the host a window of `log_every_n_steps`
    steps at a time, by a copy that does not wait; a window is read when the next one is sent, by when the
    GPU has long finished it. At epoch ends, and before any checkpoint is written, every loss is read,
    waiting if need be: a checkpoint never holds weights that already diverged. The step reported is the
    first bad one either way; a GPU run stops up to two windows after it. `check_every_step` forces either
    way (tests).
    """

    def __init__(self, check_every_step: bool | None = None) -> None:
        self.check_every_step = check_every_step  # None: on the CPU only
        self._pending: list[tuple[int, int, float, torch.Tensor]] = []  # (step, epoch, lr, loss) still on the device
        self._sent: tuple[list, torch.Tensor, Callable[[], object]] | None = None  # (entries, host copy, wait)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        every_step = self.check_every_step if self.check_every_step is not None else loss.device.type == "cpu"
        if every_step:  # one number, checked now (no stacking per step)
            value = loss.item()
            if not math.isfinite(value):
                raise self._diverged(value, trainer.global_step, trainer.current_epoch, self._lr)
            return
        self._pending.append((trainer.global_step, trainer.current_epoch, self._lr, loss.detach()))
        if len(self._pending) >= trainer.log_every_n_steps:
            self._read_sent()
            self._send()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check()

    def check(self) -> None:
        """Every loss so far, read now."""
        self._read_sent()
        self._send()
        self._read_sent()

    def _send(self) -> None:
        if self._pending:
            losses = torch.stack([loss.float() for *_, loss in self._pending])
            self._sent = (self._pending, *copy_to_host(losses))
            self._pending = []

    def _read_sent(self) -> None:
        if self._sent is None:
            return
        entries, losses, wait = self._sent
        self._sent = None
        wait()
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step, epoch, lr, _ = entries[int(bad[0])]
            raise self._diverged(float(losses[int(bad[0])]), step, epoch, lr)

    @staticmethod
    def _diverged(value: float, step: int, epoch: int, lr: float) -> NonFiniteLoss:
        return NonFiniteLoss(
            f"the training loss became {value} at step {step} (epoch {epoch + 1}, "
            f"learning rate {lr:.3g}); lower optimizer.lr or set trainer.gradient_clip_val"
        )


def copy_to_host(tensor: torch.Tensor) -> tuple[torch.Tensor, Callable[[], object]]:
    """A copy of `tensor` in host memory, and the function that waits until it is complete. From a GPU the
    copy is queued behind the work that computes `tensor` (into page-locked memory, so that the host need
    not wait for it); from the host it is `tensor` itself."""
    if tensor.device.type != "cuda":
        return tensor, lambda: None
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(tensor.device))  # the stream the copy was queued on
    return host, copied.synchronize
