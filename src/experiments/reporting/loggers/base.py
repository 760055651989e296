"""What a run tells its loggers beyond Lightning's metrics, and what our loggers share.

`RunLogger` is mixed into a Lightning logger; each of its methods has a default, so a logger overrides only
what it keeps. `run_loggers` is the one place that says which of a run's loggers speak it: a plain Lightning
logger (a user's `lightning.pytorch.loggers.CometLogger`) is answered for by `PlainLogger`, which hands it the
params and nothing else; Lightning gives it the metrics, as it gives every logger.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError


class RunLogger:
    """A run's record beyond its curves, for a Lightning logger to keep: `class MyLogger(CSVLogger, RunLogger)`."""

    def log_config(self, cfg: DictConfig) -> None:
        """The params: the composed config, flattened to dotted keys (the module keeps its own hyperparameters to
        itself, so each logger gets the whole config once, under the same names)."""
        self.log_hyperparams(flat_config(cfg))

    def add_figure(self, tag: str, figure, step: int) -> None:
        """A dashboard's matplotlib figure (a confusion matrix, misclassified images) at a global step; drawn once
        for every logger, so leave it open."""

    def add_table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        """A dashboard's table (misclassified reviews) at a global step."""

    def takes_figures(self) -> bool:
        """Whether figures are worth drawing for this logger: it overrides `add_figure` or `add_table`."""
        kind = type(self)
        return kind.add_figure is not RunLogger.add_figure or kind.add_table is not RunLogger.add_table

    def log_final(self, hparams: dict, metrics: dict) -> None:
        """Once, at the end: what tells this run apart from others (`run_hparams`) beside its final metrics, for
        a logger that lines runs up in one table."""

    def store_run_files(self, output_dir: Path, cfg: DictConfig) -> None:
        """After the run's metrics.json is written: keep it, and the composed config, with the logger's run."""

    def viewer_command(self, output_dir: Path) -> str | None:
        """How to look at this run in the logger's viewer: a command line or an address, for the run's summary."""
        return None

    def finish(self) -> None:
        """The last thing a run tells the logger, after `store_run_files`."""


class PlainLogger(RunLogger):
    """A Lightning logger that is not ours: it gets the params through Lightning's own `log_hyperparams`."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def log_config(self, cfg: DictConfig) -> None:
        self.logger.log_hyperparams(flat_config(cfg))


def run_loggers(loggers: list) -> list[RunLogger]:
    """The run's loggers, each answering to `RunLogger`: ours as they are, any other through `PlainLogger`."""
    return [logger if isinstance(logger, RunLogger) else PlainLogger(logger) for logger in loggers]


def figure_loggers(loggers: list) -> list[RunLogger]:
    """Where this run's figures go: each of its loggers that takes them."""
    return [logger for logger in run_loggers(loggers) if logger.takes_figures()]


def require_extra(package: str, choice: str) -> None:
    """`package`, which only the tracking extra installs, is importable: or one line saying how to install it."""
    try:
        importlib.import_module(package)  # Lightning's logger imports it next anyway
    except ImportError:
        raise UserError(
            f"{choice} needs {package}, which comes with the tracking extra: pip install 'experiments[tracking]'"
        ) from None


def job_names() -> tuple[str, str | None, str | None]:
    """(experiment, run, sweep) names for this job: a single run is a run of the task's experiment, named after
    its directory; a sweep's job is a run of the experiment `task/<sweep directory>`, named by its overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():  # composed in-process: a notebook, a test
        return "experiments", None, None
    hydra = HydraConfig.get()
    task, output_dir = hydra.job.name, Path(hydra.runtime.output_dir)
    if hydra.mode != RunMode.MULTIRUN:
        return task, output_dir.name, None
    from experiments.core.run_dir import this_jobs_sweep_dir

    sweep = this_jobs_sweep_dir().name
    return f"{task}/{sweep}", hydra.job.override_dirname or f"job {hydra.job.num}", sweep


def flat_config(cfg: DictConfig) -> dict[str, str | int | float | bool]:
    """The composed config as one level of dotted keys; lists and empty values as their text."""
    flat: dict[str, str | int | float | bool] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, bool | int | float | str):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def markdown_table(columns: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
