"""Stop signals, from one owner: Ctrl+C (SIGINT), SIGTERM, and SLURM's requeue signal (SIGUSR1).

A signal that arrives while a run trains is noted, not obeyed at once: at the end of the current training
batch (or, at an epoch's last batch, once the epoch's validation is done), the run saves `last.ckpt`, then
stops with one line that says where it stopped and how to continue (exit code 128 + the signal's number,
as a shell reports a process that signal ended). Without a last-checkpoint callback the line says that
nothing was saved and why. Under SLURM, SIGUSR1 (`sbatch --signal=USR1@90`) saves, requeues the job with
`scontrol requeue`, and stops; the requeued job continues from that checkpoint (a sweep job does so by
itself: sweep.py).

Why not Lightning's own handling: it stops in the middle of a validation without a checkpoint on SIGTERM,
exits with code 1 on Ctrl+C, and its SLURM handler saves from inside the signal handler, wherever the step
happens to be. What it does that matters is kept: under data parallelism every process stops at the same
step (the processes agree on the signal at each batch's end), and a signal reaching the launching process
is passed on to the processes it started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from experiments.core.errors import Interrupted

log = logging.getLogger(__name__)


def _on_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def handled_signals() -> list[int]:
    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGUSR1") and _on_slurm():  # no SIGUSR1 on Windows
        signals.append(signal.SIGUSR1)
    return signals


class StopSignals(L.Callback):
    """Notes stop signals for the whole of `trainer.fit` (`with stop.noted(): trainer.fit(...)`) and acts on them
    between batches. Always part of a run, whatever callbacks are configured."""

    def __init__(self) -> None:
        self.requests: list[int] = []  # signal numbers, in the order they came
        self._active = False  # inside `noted()`
        self._agreed = 0  # the signal the processes agreed on at the last batch's end
        self._trainer: L.Trainer | None = None

    # Handlers.
    def _note(self, signum: int, frame) -> None:
        first = not self.requests
        self.requests.append(signum)
        launcher = self._trainer.strategy.launcher if self._trainer is not None else None
        if first and launcher is not None:
            launcher.kill(signum)  # the processes this one started for data parallelism (none under torchrun)

    def _install(self) -> dict[int, object]:
        """Our handler for each stop signal; returns the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals reach the main thread only (a notebook's worker thread, a test runner's)
        return {signum: signal.signal(signum, self._note) for signum in handled_signals()}

    @contextmanager
    def noted(self) -> Iterator[None]:
        """Stop signals are noted from here to the end of the block; the previous handlers come back then (after
        Lightning's teardown, which puts back the handlers it found: ours)."""
        self.requests.clear()
        previous = self._install()
        self._active = True
        try:
            yield
        except SIGTERMException as error:  # Lightning's handler saw SIGTERM before ours took it back
            raise Interrupted(signal.SIGTERM, "before training started", why_not="training had not started") from error
        finally:
            self._active = False
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # Lightning adds its own SIGTERM handler just before the sanity check; ours takes it back.
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:
            self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:
            self._install()
        if self.requests:  # during the setup or the sanity check
            raise Interrupted(self.requests[0], "before training started", why_not="training had not started")

    # Where a run stops.
    def _requested(self, trainer: L.Trainer) -> int:
        """The first signal any process received (0: none); every process gets the same answer at the same step."""
        signum = self.requests[0] if self.requests else 0
        if trainer.world_size > 1:
            agreed = trainer.strategy.reduce(torch.tensor(signum, device=trainer.strategy.root_device), reduce_op="max")
            signum = int(agreed)
        return signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # At an epoch's last batch the run stops at the epoch's end instead, after its validation: the point
        # a resumed run goes on from cleanly. The processes agree here, at every batch, and nowhere else: a
        # collective call at the epoch's end would interleave with the metrics' own.
        self._agreed = self._requested(trainer)
        if self._agreed and batch_idx + 1 != trainer.num_training_batches:
            self._stop(trainer, self._agreed)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # One process also stops for a signal that came during the validation; several go on to the next
        # batch's end, where they agree on it.
        signum = self._agreed if trainer.world_size > 1 else (self.requests[0] if self.requests else 0)
        if signum:
            self._stop(trainer, signum)

    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        from experiments.run.recovery import LastCheckpoint, resume_from

        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
        last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        if last is None:
            raise Interrupted(signum, where, why_not="no last checkpoint is configured: callbacks.last_checkpoint")
        last.save_now(trainer)
        if signum == getattr(signal, "SIGUSR1", None) and trainer.is_global_zero:
            where += "; " + requeue()
        raise Interrupted(signum, where, resume_from(last.last_model_path))


def requeue() -> str:
    """Put this SLURM job back in the queue; what happened, in a few words."""
    job = os.environ["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"SLURM job {job} not requeued ({error})"
    if done.returncode != 0:
        return f"SLURM job {job} not requeued (scontrol: {done.stderr.strip() or done.returncode})"
    return f"SLURM job {job} requeued"
