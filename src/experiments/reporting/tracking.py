"""Trackers beyond TensorBoard: MLflow and Weights & Biases (conf/logger/mlflow.yaml, wandb.yaml, many.yaml).

Each is Lightning's own logger, built here so that every tracker holds the same record of a run:
- its params are the composed config, flattened to dotted keys (`model.channels`): `log_config`;
- the run's `tags` and `notes` (top-level config keys) go where each tracker shows them;
- a sweep is one MLflow experiment (one W&B group) with one run per job, named by the job's overrides;
- at the end, the run's metrics.json and composed config are stored with it: `store_run_files`;
- the dashboards' figures reach every logger that takes images (reporting/dashboards.py).
They are an extra (`pip install 'experiments[tracking]'`); without it, choosing one is one line saying so.
"""

from __future__ import annotations

import importlib
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError

REACH_SECONDS = 5  # how long a tracking server may take to answer before the run gives up on it


def require(package: str, choice: str) -> None:
    try:
        importlib.import_module(package)  # Lightning's logger imports it next anyway
    except ImportError:
        raise UserError(
            f"{choice} needs {package}, which comes with the tracking extra: pip install 'experiments[tracking]'"
        ) from None


def mlflow_logger(
    *,
    tracking_uri: str | None = None,
    store_dir: str = "outputs",
    experiment_name: str | None = None,
    run_name: str | None = None,
    tags: list[str] | None = None,
    notes: str | None = None,
    **kwargs,
):
    """Lightning's MLFlowLogger. Without a tracking URI (nor MLFLOW_TRACKING_URI), a local store that every run
    started in this folder shares: `store_dir/mlflow.db` and `store_dir/mlartifacts/`."""
    require("mlflow", "logger=mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri is None:
        store = Path(store_dir).resolve()
        store.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{(store / 'mlflow.db').as_posix()}"  # MLflow 3 no longer takes plain folders
        kwargs.setdefault("artifact_location", (store / "mlartifacts").as_uri())
    else:
        check_reachable(tracking_uri)
    experiment, run, _ = job_names()
    mlflow_tags = {tag: "" for tag in tags or []}
    if notes:
        mlflow_tags["mlflow.note.content"] = notes  # the run's Description in MLflow's UI
    inherited = os.environ.get("MLFLOW_TRACKING_URI")
    logger = MLFlowLogger(
        experiment_name=experiment_name or experiment,
        run_name=run_name or run,
        tracking_uri=tracking_uri,
        tags=mlflow_tags,
        **kwargs,
    )
    logger.experiment  # noqa: B018 (the run starts here, where MLflow puts its URI in the environment)
    if inherited is None:  # for this run alone: not for the next job of a sweep run in this process
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return logger


def wandb_logger(
    *,
    project: str | None = None,
    name: str | None = None,
    group: str | None = None,
    offline: bool = True,
    tags: list[str] | None = None,
    notes: str | None = None,
    **kwargs,
):
    """Lightning's WandbLogger, offline unless asked otherwise: nothing leaves the machine until `wandb sync`."""
    require("wandb", "logger=wandb")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    if wandb.run is not None:  # an earlier job of this sweep, in this process, that failed: it would be reused
        wandb.run.finish(exit_code=1)

    experiment, run, sweep = job_names()
    return WandbLogger(
        project=project or experiment.split("/")[0],  # W&B's projects take no "/": a sweep is a group
        name=name or run,
        group=group or sweep,
        offline=offline,
        tags=list(tags or []),
        notes=notes,
        **kwargs,
    )


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


def check_reachable(tracking_uri: str) -> None:
    """A tracking server that does not answer: one line within seconds, not minutes of the client's retries."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=REACH_SECONDS):
            pass
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"the MLflow tracking server {tracking_uri} does not answer ({reason}): start it, or choose another "
            "with logger.mlflow.tracking_uri (or MLFLOW_TRACKING_URI)"
        ) from None


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


def log_config(loggers: list, cfg: DictConfig) -> None:
    """Every logger's params: the composed config (the module keeps its own hyperparameters to itself)."""
    params = flat_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)


def store_run_files(loggers: list, output_dir: Path, cfg: DictConfig) -> None:
    """The run's metrics.json and composed config, kept by the trackers that store files; the last thing a run
    tells them, so W&B's run is finished here."""
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    metrics, config = output_dir / "metrics.json", OmegaConf.to_yaml(cfg, resolve=True)
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(metrics))
            logger.experiment.log_text(logger.run_id, config, "config.yaml")
        elif isinstance(logger, WandbLogger):
            run = logger.experiment
            (Path(run.dir) / "config.composed.yaml").write_text(config)  # W&B keeps its own config.yaml there
            (Path(run.dir) / "metrics.json").write_bytes(metrics.read_bytes())
            run.finish()  # now, not at exit: the next job of a sweep in this process starts a run of its own


def dashboards(loggers: list, output_dir: Path) -> list[str]:
    """How to look at this run in each of its loggers that has a viewer."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    commands = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            commands.append(f"tensorboard --logdir {output_dir}")
        elif isinstance(logger, MLFlowLogger):
            uri = logger._tracking_uri  # Lightning keeps no public copy
            run = f"#/experiments/{logger.experiment_id}/runs/{logger.run_id}"
            served = uri.startswith(("http://", "https://"))
            commands.append(f"{uri.rstrip('/')}/{run}" if served else f"mlflow ui --backend-store-uri {uri}  ({run})")
        elif isinstance(logger, WandbLogger) and logger.experiment.offline:
            commands.append(f"wandb sync {Path(logger.experiment.dir).parent}")
    return commands


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
