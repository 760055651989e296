"""Train, then test, one model on one dataset: the task behind `python -m experiments`.

    python -m experiments                                  # the CNN on the bundled digits, offline
    python -m experiments model=rnn trainer.max_epochs=5 seed=7
    python -m experiments model=mlp optimizer=sgd optimizer.lr=0.1 model.width=512
    python -m experiments --help                           # the config groups and their options
    python -m experiments --cfg job                        # print the composed config, run nothing

Every run writes its own directory: `.hydra/` (the composed config), `tensorboard/`, `checkpoints/`
(best and last) and `metrics.json`. `train()` returns the objective, so any Hydra sweeper can use it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from experiments.config import ENVIRONMENT_ERRORS, config_dir, first_line, is_user_error, validate
from experiments.sweep import run_job

if TYPE_CHECKING:
    from experiments.profiler import NoProfiler

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    validate(cfg)
    started = time.perf_counter()
    # Imported here, not at the top, so that --help, --cfg and config errors answer without loading torch.
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.callbacks import ProgressBar as AnyProgressBar  # ours, callbacks.ProgressBar, among them

    from experiments.allocator import keep_freed_memory
    from experiments.callbacks import Throughput
    from experiments.cuda_checks import plain_cuda_checks
    from experiments.data.files import written_atomically
    from experiments.models.classifier import Classifier
    from experiments.models.optim import build_optimizer
    from experiments.recovery import (
        AtomicCheckpointIO,
        StopOnNonFiniteLoss,
        check_resumable,
        load_checkpoint,
        stop_signals_noted,
    )

    resumed = None
    if cfg.get("resume"):
        # A damaged or unsafe file: one line now, before anything is built. Mapped rather than read, and onto
        # the CPU whatever device the run trained on; `check_resumable` compares its shapes with the model.
        resumed = load_checkpoint(cfg.resume, map_location="cpu", mmap=True)
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # ours
    keep_freed_memory()  # each step reuses the last step's buffers instead of mapping them afresh
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = Classifier(
        spec=datamodule.spec,
        net=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        label_smoothing=cfg.label_smoothing,
        compile=cfg.compile,
        cuda_graphs=cfg.cuda_graphs,
    )
    if resumed is not None:
        check_resumable(resumed, model, build_optimizer(model.net, model.hparams.optimizer))
    throughput = Throughput()
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c] + [throughput, StopOnNonFiniteLoss()]
    loggers = [instantiate(c) for c in cfg.logger.values() if c]
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        # A callback entry set to null drops it: Lightning is not to put its own default in its place.
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, AnyProgressBar) for c in callbacks),
        precision=pick_precision(cfg.trainer),
        benchmark=pick_benchmark(cfg),
        profiler=pick_profiler(cfg.trainer),
        plugins=[AtomicCheckpointIO()],
    )

    # SIGINT/SIGTERM: save last.ckpt at the end of the batch, then stop. Without a GPU: no driver query per step.
    with stop_signals_noted(), plain_cuda_checks(trainer.strategy.root_device):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("resume"))
    fit_seconds = time.perf_counter() - started
    val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    test_metrics = {}
    if cfg.test:
        # The best checkpoint when there is one (not under fast_dev_run or without checkpointing).
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_metrics = {k: float(v) for k, v in results[0].items()}

    if checkpoint is not None and checkpoint.best_model_score is not None:
        objective = float(checkpoint.best_model_score)
    else:
        objective = val_metrics.get(cfg.objective, float("nan"))
    output_dir = Path(cfg.paths.output_dir)
    metrics = {
        "objective": {"metric": cfg.objective, "mode": cfg.objective_mode, "value": objective},
        "val": val_metrics,
        "test": test_metrics,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "fit_seconds": round(fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "samples_per_second": throughput.samples_per_second,
        "parameters": sum(p.numel() for p in model.parameters()),
        "best_checkpoint": best_path,
    }
    if trainer.is_global_zero:  # under data parallelism, one process reports for all
        output_dir.mkdir(parents=True, exist_ok=True)  # absent when neither checkpoints nor a logger wrote there
        with written_atomically(output_dir / "metrics.json") as temporary:  # never seen half-written
            temporary.write_text(json.dumps(metrics, indent=2) + "\n")
        print_summary(metrics, output_dir)
    return objective


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Lightning's messages go through the run's log handlers once, without advertisements."""
    logging.getLogger("lightning").handlers.clear()  # its own console handler would print each line twice
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advertisement)
    # Lightning 2.6 calls a pytree helper that torch >= 2.10 deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def plain(node: DictConfig) -> dict:
    """Config node -> plain dict, so hyperparameters stored in checkpoints hold no OmegaConf objects."""
    return OmegaConf.to_container(node, resolve=True)


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


def pick_profiler(trainer_cfg: DictConfig) -> str | DictConfig | NoProfiler:
    """The run's profiler (`simple`, `advanced`, ...), or none: one that records nothing at less cost per hook
    call than Lightning's default (see profiler.py)."""
    chosen = trainer_cfg.get("profiler")
    if chosen is not None:
        return chosen
    from experiments.profiler import NoProfiler

    return NoProfiler()


def print_summary(metrics: dict, output_dir: Path) -> None:
    test, objective = metrics["test"], metrics["objective"]
    lines = []
    if test:
        lines.append(f"test accuracy  {test['test/acc']:.4f}   test loss {test['test/loss']:.4f}")
    lines += [
        f"best {objective['metric']:<9} {objective['value']:.4f}   after {metrics['epochs']} epochs",
        f"time           {metrics['wall_seconds']:.1f} s"
        + (f"   {metrics['samples_per_second']:,.0f} training samples/s" if metrics["samples_per_second"] else ""),
        f"checkpoint     {metrics['best_checkpoint'] or '(none saved)'}",
        f"run directory  {output_dir}",
        f"dashboard      tensorboard --logdir {output_dir}",
    ]
    log.info("\n".join(lines))  # to the console and the run's train.log


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from experiments.recovery import Interrupted, NonFiniteLoss

    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return run_job(train, cfg)  # a failed job is recorded, and the sweep goes on: see sweep.py
        return train(cfg)
    except Interrupted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as error:
        if is_user_error(error) and not cfg.get("resume"):
            discard_unstarted_run(Path(HydraConfig.get().runtime.output_dir))
        exit_for_user_error(error)  # here, before Hydra adds its own report of the failed job


def discard_unstarted_run(output_dir: Path) -> None:
    """A run that a user error stopped before it wrote anything of its own leaves no directory behind."""
    hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
    if output_dir.is_dir() and {path.name for path in output_dir.iterdir()} <= hydra_files:
        shutil.rmtree(output_dir, ignore_errors=True)


def describe(error: BaseException) -> str:
    """One line for a user's mistake: what is wrong and what is allowed."""
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRORS:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot write{where}: {error.strerror}; choose a writable place (paths.data_dir, hydra.run.dir)"
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options is not None:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option}: no such option; choose from {', '.join(sorted(error.options))}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override '{error.override}': {first_line(error.message)}"
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        return f"{cause.full_key}: no such key; `--cfg job` lists the keys, +{cause.full_key}=VALUE adds one"
    if isinstance(error, InstantiationException) and cause is not None:
        error = cause
    return first_line(str(error)) or type(error).__name__


def exit_for_user_error(error: BaseException) -> NoReturn:
    """A user's mistake: one line and exit code 2. Anything else goes on up, the bug it is, with its traceback."""
    if not is_user_error(error) or os.environ.get("EXPERIMENTS_DEBUG"):
        raise error
    print(f"error: {describe(error)}  (EXPERIMENTS_DEBUG=1 shows the traceback)", file=sys.stderr, flush=True)
    sys.exit(2)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user's mistake ends in one line and exit code 2."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach `describe` instead of its multi-line report
    try:
        arguments = sys.argv[1:]
        resuming = any(argument.startswith("resume=") for argument in arguments)
        if resuming:  # imported only then: it loads torch, which --help and --cfg do without
            from experiments.recovery import resumed
        with resumed(arguments) if resuming else nullcontext(arguments) as sys.argv[1:]:
            _hydra_main()
    except KeyboardInterrupt:  # Ctrl+C before training started: nothing to save
        print("interrupted before training started; nothing was saved", file=sys.stderr, flush=True)
        sys.exit(130)
    except BrokenPipeError:  # `python -m experiments --help | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as error:  # e.g. a bad override, or Hydra creating the run directory where it cannot
        exit_for_user_error(error)
