"""MLflow (conf/logger/mlflow.yaml; the tracking extra): a local store by default, or a tracking server.

A sweep is one MLflow experiment, `<task>/<sweep directory>`, with one run per job named by its overrides.
A server is asked whether it answers before the run starts (`check_reachable`).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from lightning.pytorch import loggers as lightning
from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError
from experiments.core.run_dir import RunDir
from experiments.reporting.loggers.base import RunLogger, job_names, markdown_table, require_extra

REACH_SECONDS = 5  # how long a tracking server may take to answer before the run gives up on it


class MLflow(lightning.MLFlowLogger, RunLogger):
    """Lightning's MLFlowLogger. Without a tracking URI (nor MLFLOW_TRACKING_URI), a local store that every run
    started in this folder shares: `store_dir/mlflow.db` and `store_dir/mlartifacts/`."""

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        store_dir: str = "outputs",
        experiment_name: str | None = None,
        run_name: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        **kwargs,
    ) -> None:
        require_extra("mlflow", "logger=mlflow")
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
        super().__init__(
            experiment_name=experiment_name or experiment,
            run_name=run_name or run,
            tracking_uri=tracking_uri,
            tags=mlflow_tags,
            **kwargs,
        )
        self.experiment  # noqa: B018 (the run starts here, where MLflow puts its URI in the environment)
        if inherited is None:  # for this run alone: not for the next job of a sweep run in this process
            os.environ.pop("MLFLOW_TRACKING_URI", None)

    def add_figure(self, tag: str, figure, step: int) -> None:
        """PNG files of the run, one per evaluation: `figures/<stage>/<name>/step-<global step>.png`."""
        self.experiment.log_figure(self.run_id, figure, f"figures/{tag}/step-{step:07d}.png")

    def add_table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        self.experiment.log_text(self.run_id, markdown_table(columns, rows), f"figures/{tag}/step-{step:07d}.md")

    def store_run_files(self, output_dir: Path, cfg: DictConfig) -> None:
        self.experiment.log_artifact(self.run_id, str(RunDir(output_dir).metrics_file))
        self.experiment.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def finish(self) -> None:
        # Lightning ended the run after the test; the files stored since then end it again, at its real end.
        self.experiment.set_terminated(self.run_id, "FINISHED")

    def viewer_command(self, output_dir: Path) -> str:
        uri = self._tracking_uri  # Lightning keeps no public copy
        run = f"#/experiments/{self.experiment_id}/runs/{self.run_id}"
        served = uri.startswith(("http://", "https://"))
        return f"{uri.rstrip('/')}/{run}" if served else f"mlflow ui --backend-store-uri {uri}  ({run})"


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
