"""The Lightning Trainer of a run, from `conf/trainer` and the settings that need a decision at start.

Shared by training and evaluation, so both pick precision the same way and print the same quiet log.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    import lightning as L

    from experiments.core.lightning_internals import NoProfiler


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Lightning's messages go through the run's log handlers once, without advertisements."""
    logging.getLogger("lightning").handlers.clear()  # its own console handler would print each line twice
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advertisement)
    # Lightning 2.6 calls a pytree helper that torch >= 2.10 deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def pick_precision(trainer_cfg: DictConfig) -> str:
    """`auto`: bf16 mixed precision on a GPU that has it (fp16 on older ones), else full fp32."""
    if trainer_cfg.precision != "auto":
        return trainer_cfg.precision
    import torch

    if trainer_cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def pick_benchmark(cfg: DictConfig) -> bool:
    """`null`: cuDNN autotuning on, unless the run asks for deterministic kernels (which it would override).
    Our batches keep one shape from step to step, so each convolution is timed once and its fastest kernel
    runs every step after; Lightning's default leaves it off."""
    chosen = cfg.trainer.get("benchmark")
    return not cfg.deterministic if chosen is None else chosen


def pick_profiler(cfg: DictConfig) -> str | DictConfig | NoProfiler | None:
    """The run's profiler (`simple`, `advanced`, ...), or none: on the fast path, one that records nothing at
    less cost per hook call than Lightning's default (core/lightning_internals.py)."""
    chosen = cfg.trainer.get("profiler")
    if chosen is not None or not cfg.get("fast_path", True):
        return chosen
    from experiments.core.lightning_internals import NoProfiler

    return NoProfiler()


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list) -> L.Trainer:
    import lightning as L
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.callbacks import ProgressBar as AnyProgressBar  # ours, callbacks.ProgressBar, among them

    from experiments.core.build import build
    from experiments.run.recovery import AtomicCheckpointIO

    return build(
        cfg.trainer,
        "trainer",
        L.Trainer,
        callbacks=callbacks,
        logger=loggers or False,
        # A callback entry set to null drops it: Lightning is not to put its own default in its place.
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, AnyProgressBar) for c in callbacks),
        precision=pick_precision(cfg.trainer),
        benchmark=pick_benchmark(cfg),
        profiler=pick_profiler(cfg),
        plugins=[AtomicCheckpointIO()],
    )
