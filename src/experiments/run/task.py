"""Train, then test, one model on one dataset: the task behind `experiments train` (commands/train.py).

    from experiments.core.config import compose
    from experiments.run.task import train
    train(compose(["model=rnn", "trainer.max_epochs=5", "paths.output_dir=outputs/notebook"]))

`train()` builds the data, the model and the Trainer from the composed config, fits, tests the best
checkpoint, writes `metrics.json` into the run's directory (core/run_dir.py) and returns the objective, so any
Hydra sweeper can use it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.core.config import validate
from experiments.core.run_dir import Metrics, Objective, RunDir, final_objective
from experiments.reporting.loggers.base import run_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    validate(cfg)
    started = time.perf_counter()
    # Imported here, not at the top, so that --help, --cfg and config errors answer without loading torch.
    import lightning as L
    from lightning.pytorch.loggers import Logger

    from experiments.core.build import build
    from experiments.reporting.callbacks import Throughput, logged_by
    from experiments.run.allocator import keep_freed_memory
    from experiments.run.nvml import plain_cuda_checks
    from experiments.run.recovery import StopOnNonFiniteLoss, check_resumable, init_weights, load_checkpoint
    from experiments.run.stop_signals import StopSignals
    from experiments.run.trainer import build_trainer, quiet_lightning
    from experiments.run.trial import report_to_trial

    resumed = None
    if cfg.get("resume"):
        # A damaged or unsafe file: one line now, before anything is built. Mapped rather than read, and onto
        # the CPU whatever device the run trained on; `check_resumable` compares its shapes with the model.
        resumed = load_checkpoint(cfg.resume, map_location="cpu", mmap=True)
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # ours
    keep_freed_memory()  # each step reuses the last step's buffers instead of mapping them afresh
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.data, "data", L.LightningDataModule)
    throughput, stop_signals = Throughput(), StopSignals()
    trial_reports = report_to_trial(cfg)  # a search's job: its objective to its trial, stopped if pruned (run/trial.py)
    always = [throughput, StopOnNonFiniteLoss(), stop_signals, *trial_reports]  # whatever the callbacks config says
    callbacks = [build(c, f"callbacks.{name}", L.Callback) for name, c in cfg.callbacks.items() if c] + always
    model, optimizer_groups = build_model(cfg, datamodule.spec, logged_by(callbacks))
    if resumed is not None:
        check_resumable(resumed, model, optimizer_groups)
    if cfg.get("init_from"):
        log.info(init_weights(model, cfg.init_from))
    loggers = [build(c, f"logger.{name}", Logger) for name, c in cfg.logger.items() if c]
    trainer = build_trainer(cfg, callbacks, loggers)
    for logger in run_loggers(trainer.loggers):
        logger.log_config(cfg)

    # Ctrl+C, SIGTERM: last.ckpt at the end of the batch, then stop (stop_signals.py). Without a GPU: no driver
    # query per step.
    with stop_signals.noted(), plain_cuda_checks(trainer.strategy.root_device):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("resume"))
    fit_seconds = time.perf_counter() - started
    val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    test_metrics = {}
    pruned = any(report.pruned for report in trial_reports)
    if cfg.test and not pruned:
        # The best checkpoint when there is one (not under fast_dev_run or without checkpointing).
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_metrics = {k: float(v) for k, v in results[0].items()}

    best_score = checkpoint.best_model_score if checkpoint is not None else None
    objective = final_objective(val_metrics, best_score, cfg.objective)
    metrics = Metrics(
        objective=Objective(cfg.objective, cfg.objective_mode, objective),
        val=val_metrics,
        test=test_metrics,
        epochs=trainer.current_epoch,
        global_steps=trainer.global_step,
        fit_seconds=round(fit_seconds, 3),
        wall_seconds=round(time.perf_counter() - started, 3),
        samples_per_second=throughput.samples_per_second,
        parameters=sum(p.numel() for p in model.parameters()),
        best_checkpoint=RunDir(Path(cfg.paths.output_dir)).recorded(best_path),
        tags=list(cfg.get("tags") or []),
        notes=cfg.get("notes") or "",
        status="pruned" if pruned else "completed",
    )
    if trainer.is_global_zero:  # under data parallelism, one process reports for all
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)  # absent when neither checkpoints nor a logger wrote there
        metrics.write(RunDir(output_dir).metrics_file)
        print_summary(metrics, output_dir, trainer.loggers, model.task)
        for logger in run_loggers(trainer.loggers):
            logger.store_run_files(output_dir, cfg)
            logger.finish()
    return objective


def build_model(cfg: DictConfig, spec: dict, also_logged: Iterable[str] = ()):
    """The run's LightningModule for data described by `spec`, its net built for the task the data's labels ask
    for, and the number of parameter groups its optimiser will have. The objective, the optimiser and the
    schedule are checked here, before anything is written, without building the optimiser or the schedule:
    Lightning has the module build them, once, when it fits (`configure_optimizers`)."""
    from experiments.models.model import FastModel, Model, check_objective
    from experiments.models.optim import check_optimizer, check_scheduler
    from experiments.models.tasks import check_task_settings, task_of

    model_class = FastModel if cfg.get("fast_path", True) else Model
    model = model_class(
        spec=spec,
        net=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        compile=cfg.compile,
        cuda_graphs=cfg.cuda_graphs,
        task=task_settings(cfg, task_of(spec)),
    )
    check_task_settings(model.task, cfg.label_smoothing)
    check_objective(cfg.objective, model.task, also_logged)
    optimizer_groups = check_optimizer(model.net, model.hparams.optimizer)
    check_scheduler(model.hparams.scheduler)
    return model, optimizer_groups


def task_settings(cfg: DictConfig, task: str) -> dict:
    """The `tasks` entry of the task the data asks for: its class and settings (the objective is the run's)."""
    from experiments.core.errors import UserError

    tasks = plain(cfg.tasks) if "tasks" in cfg else {}
    if task not in tasks:
        raise UserError(f"the data's labels are for {task}, and the config has no tasks.{task} to learn it")
    return {key: value for key, value in tasks[task].items() if key not in ("objective", "objective_mode")}


def plain(node: DictConfig) -> dict:
    """Config node -> plain dict, so hyperparameters stored in checkpoints hold no OmegaConf objects."""
    return OmegaConf.to_container(node, resolve=True)


def print_summary(metrics: Metrics, output_dir: Path, loggers: list, task) -> None:
    test, objective = metrics.test, metrics.objective
    best = RunDir(output_dir).resolve(metrics.best_checkpoint) if metrics.best_checkpoint else "(none saved)"
    viewers = (logger.viewer_command(output_dir) for logger in run_loggers(loggers))
    lines = []
    if test:
        lines.append(headline(test, "test", task))
    lines += [
        f"best {objective.metric:<9} {objective.value:.4f}   after {metrics.epochs} epochs",
        f"time           {metrics.wall_seconds:.1f} s"
        + (f"   {metrics.samples_per_second:,.0f} training samples/s" if metrics.samples_per_second else ""),
        f"checkpoint     {best}",
        f"run directory  {output_dir}",
        *(f"dashboard      {command}" for command in viewers if command),
    ]
    log.info("\n".join(lines))  # to the console and the run's train.log


def headline(metrics: dict[str, float], stage: str, task) -> str:
    """The first line of a summary: the task's headline metric and the loss, e.g. `test accuracy  0.9926 ...`."""
    metric, name = task.headline
    return f"{stage} {name:<9} {metrics[f'{stage}/{metric}']:.4f}   {stage} loss {metrics[f'{stage}/loss']:.4f}"
