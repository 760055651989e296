"""MLflow (conf/logger/mlflow.yaml; the tracking extra): a local store by default, or a tracking server.

A sweep is one MLflow experiment, `<task>/<sweep directory>`, with one run per job named by its overrides.
A server is asked whether it answers before the run starts (`check_reachable`); one that stops answering during
the run is given up on (`while_answering`): one warning, then nothing more is sent to it, and the run goes on
with its own files.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch import loggers as lightning
from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError
from experiments.core.run_dir import RunDir
from experiments.reporting.loggers.base import RunLogger, job_names, markdown_table, require_extra

log = logging.getLogger(__name__)

REACH_SECONDS = 5  # how long a tracking server may take to answer before the run gives up on it

# MLflow's client retries a request 7 times, backing off from 4 s to 2 minutes, and waits up to 120 s for each
# answer: about four minutes of a stalled run for a server that has gone. Ours makes 3 tries: about 3 s for a
# dead server, half a minute for a hung one. Where the user set one of these, theirs is kept; MLflow reads them
# at each request, so they are set around our client's requests only, not for the rest of the process.
BOUNDED_REQUESTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # read as an integer
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@contextmanager
def bounded_requests():
    added = {name: value for name, value in BOUNDED_REQUESTS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def while_answering(method):
    """`method` sends to the tracking server while it answers; the first time it does not, one warning, and from
    then on the logger sends nothing: the run keeps its own files, checkpoints and exit code."""

    @functools.wraps(method)
    def sending(self, *args, **kwargs):
        if self.lost:
            return None
        try:
            with bounded_requests():
                return method(self, *args, **kwargs)
        except Exception as error:
            reason = out_of_reach(error)
            if reason is None:  # the server answered, with an error of the run's own: as before, it fails the run
                raise
            self.lost = True
            log.warning(
                f"tracking lost: the MLflow server {self._tracking_uri} stopped answering ({reason}); this run "
                "sends it nothing more and goes on with its own files"
            )
            return None

    return sending


def out_of_reach(error: BaseException) -> str | None:
    """Why the server is out of reach, if that is what `error` (or one it was raised from) says; else None. Any
    failure to get an answer counts (refused, reset, cut off mid-answer, timed out, errors at every try); an
    answer that is an error (HTTPError) is the server's to give."""
    import requests

    while error is not None:
        if isinstance(error, requests.exceptions.RetryError):
            return "it answered with errors at every try"
        answered = isinstance(error, requests.exceptions.HTTPError)
        if isinstance(error, requests.exceptions.RequestException) and not answered:
            first = error.args[0] if error.args else error
            cause = getattr(first, "reason", first)  # urllib3's, under requests' retries
            text = next((arg for arg in getattr(cause, "args", ()) if isinstance(arg, str)), str(cause))
            return re.sub(r"^\w+\(host=[^)]*\): ", "", text)  # urllib3's "HTTPConnection(host=..., port=...): "
        error = error.__cause__ or error.__context__
    return None


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
        self.lost = False  # the server stopped answering during the run: nothing more is sent to it
        with bounded_requests():
            self.experiment  # noqa: B018 (the run starts here, where MLflow puts its URI in the environment)
        if inherited is None:  # for this run alone: not for the next job of a sweep run in this process
            os.environ.pop("MLFLOW_TRACKING_URI", None)

    # Lightning's own calls, each sent while the server answers.
    @while_answering
    def log_hyperparams(self, params) -> None:
        super().log_hyperparams(params)

    @while_answering
    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, step)

    @while_answering
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        super().after_save_checkpoint(checkpoint_callback)

    @while_answering
    def finalize(self, status: str = "success") -> None:
        super().finalize(status)

    # Ours.
    @while_answering
    def add_figure(self, tag: str, figure, step: int) -> None:
        """PNG files of the run, one per evaluation: `figures/<stage>/<name>/step-<global step>.png`."""
        self.experiment.log_figure(self.run_id, figure, f"figures/{tag}/step-{step:07d}.png")

    @while_answering
    def add_table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        self.experiment.log_text(self.run_id, markdown_table(columns, rows), f"figures/{tag}/step-{step:07d}.md")

    def takes_figures(self) -> bool:
        return not self.lost  # else drawn for nobody when MLflow is the run's only logger

    @while_answering
    def store_run_files(self, output_dir: Path, cfg: DictConfig) -> None:
        self.experiment.log_artifact(self.run_id, str(RunDir(output_dir).metrics_file))
        self.experiment.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    @while_answering
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
