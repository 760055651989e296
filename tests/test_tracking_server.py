"""The MLflow logger against a tracking server: one that does not answer stops the run at start in one line;
one that answers gets the whole run; one that dies mid-run is left after one warning and the run completes."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from experiments.core.errors import UserError
from experiments.reporting.loggers import mlflow
from experiments.reporting.loggers.mlflow import MLflow
from tests.conftest import run_cli
from tests.test_sweeps import free_port

SHORT = ("model=mlp", "trainer.max_epochs=2", "trainer.accelerator=cpu")  # the digits: 20 steps an epoch


def test_a_tracking_server_that_does_not_answer_is_one_line_within_seconds(monkeypatch, tmp_path):
    monkeypatch.setattr(mlflow, "REACH_SECONDS", 1)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for uri in (closed, mute):
            started = time.perf_counter()
            with pytest.raises(UserError) as caught:
                MLflow(tracking_uri=uri, store_dir=str(tmp_path))
            assert time.perf_counter() - started < 3
            line = str(caught.value)
            assert line.startswith(f"the MLflow tracking server {uri} does not answer (") and "\n" not in line
            assert line.endswith("with logger.mlflow.tracking_uri (or MLFLOW_TRACKING_URI)")
    assert list(tmp_path.iterdir()) == []


class Replying(http.server.BaseHTTPRequestHandler):
    """Reads the request whole, then sends the server's `reply`, raw, and hangs up; or, with None, says nothing
    for longer than the client waits."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.reply is None:
            time.sleep(2)
        else:
            self.wfile.write(self.server.reply)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def answering(reply: bytes | None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replying)
    server.reply = reply
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def failure_of_log_batch(uri: str) -> BaseException:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    with mlflow.bounded_requests(), pytest.raises(Exception) as caught:
        MlflowClient(uri).log_batch("0" * 32, metrics=[Metric("train/loss", 1.0, 0, 0)])
    return caught.value


def test_a_server_out_of_reach_is_told_from_one_that_answers_with_an_error(monkeypatch):
    # MLflow's own client against real sockets: nothing listening, an answer cut off, silence, and an error.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's settings win over ours
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    started = time.perf_counter()
    reason = mlflow.out_of_reach(failure_of_log_batch(f"http://127.0.0.1:{free_port()}"))
    assert reason.startswith("Failed to establish a new connection") and "Connection refused" in reason
    cut_off = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    with answering(cut_off) as uri:
        assert mlflow.out_of_reach(failure_of_log_batch(uri)).startswith("Connection broken: IncompleteRead(")
    with answering(None) as uri:
        assert mlflow.out_of_reach(failure_of_log_batch(uri)) == "Read timed out. (read timeout=1)"
    error = b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "no such run"}'
    bad = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    with answering(bad % (len(error), error)) as uri:
        failure = failure_of_log_batch(uri)
        assert "no such run" in str(failure) and mlflow.out_of_reach(failure) is None  # the server answered
    assert time.perf_counter() - started < 10  # no retries: the user's setting was kept
    assert "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR" not in os.environ  # ours only around our client's requests


def get(url: str, **query) -> dict:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}", timeout=30) as response:
        return json.loads(response.read())


def runs_of(server: str, experiment_id: str) -> list[dict]:
    request = urllib.request.Request(
        f"{server}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()).get("runs", [])


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """The server and the workers it started: all of its process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)
        self.process.wait(timeout=30)


@pytest.fixture
def served(tmp_path) -> Iterator[Server]:
    """A real MLflow server on 127.0.0.1, one worker (its default four take half a minute to start on two cores)."""
    port = free_port()
    where = ("--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    store = ("--backend-store-uri", f"sqlite:///{(tmp_path / 'server.db').as_posix()}")
    artifacts = ("--artifacts-destination", str(tmp_path / "server-artifacts"))
    server = Server(
        f"http://127.0.0.1:{port}",
        subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", *where, *store, *artifacts],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own, so that its workers go with it
        ),
    )
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the MLflow server did not start within two minutes")
        yield server
    finally:
        server.kill(signal.SIGTERM)


@pytest.fixture
def mlflow_server(served) -> str:
    return served.url


@pytest.mark.slow
def test_a_run_reaches_a_real_mlflow_server_with_its_params_metrics_files_and_figures(mlflow_server, tmp_path):
    result = run_cli(
        *SHORT,
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={mlflow_server}",
        "tags=[smoke]",
        "notes=first",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = get(f"{api}/experiments/get-by-name", experiment_name="train")["experiment"]
    (run,) = runs_of(mlflow_server, experiment["experiment_id"])
    run_id = run["info"]["run_id"]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert run["info"]["run_name"] == run_dir.name and run["info"]["status"] == "FINISHED"
    link = f"{mlflow_server}/#/experiments/{experiment['experiment_id']}/runs/{run_id}"
    assert f"dashboard      {link}\n" in result.stdout + result.stderr
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.width"] == "256" and params["trainer.max_epochs"] == "2" and params["notes"] == "first"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert "smoke" in tags and tags["mlflow.note.content"] == "first"
    for metric in ("train/loss", "val/acc", "val/loss", "val/f1"):
        history = get(f"{api}/metrics/get-history", run_id=run_id, metric_key=metric)["metrics"]
        assert [point["step"] for point in history] == [19, 39], metric
    local = json.loads((run_dir / "metrics.json").read_text())
    (test_acc,) = get(f"{api}/metrics/get-history", run_id=run_id, metric_key="test/acc")["metrics"]
    assert test_acc["value"] == pytest.approx(local["test"]["test/acc"])

    def artifact(path: str) -> bytes:
        query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
        with urllib.request.urlopen(f"{mlflow_server}/get-artifact?{query}", timeout=30) as response:
            return response.read()

    assert json.loads(artifact("metrics.json")) == local
    assert "max_epochs: 2" in artifact("config.yaml").decode()
    for stage in ("val", "test"):
        for name in ("confusion_matrix", "misclassified"):
            files = get(f"{api}/artifacts/list", run_id=run_id, path=f"figures/{stage}/{name}")["files"]
            assert [Path(f["path"]).name for f in files] == ["step-0000040.png"]
            with Image.open(io.BytesIO(artifact(files[0]["path"]))) as image:
                image.verify()


@pytest.mark.slow
def test_a_server_that_dies_mid_run_is_left_after_one_warning_and_the_run_completes(served, tmp_path):
    # Long enough to be training when the server goes: 20 epochs of 20 steps, a loss point every 10 steps.
    overrides = ("model=mlp", "trainer.max_epochs=20", "trainer.accelerator=cpu", "logger=mlflow")
    run = subprocess.Popen(
        [sys.executable, "-m", "experiments", *overrides, f"logger.mlflow.tracking_uri={served.url}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []  # (when it was read, the line)

    def read() -> None:
        for line in run.stdout:
            lines.append((time.perf_counter(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.perf_counter() + 120
        while not training_is_logged(served.url):  # the run has sent its params and a first loss
            assert run.poll() is None and time.perf_counter() < deadline, "".join(line for _, line in lines)
            time.sleep(0.2)
        served.kill()
        killed = time.perf_counter()
        assert run.wait(timeout=120) == 0, "".join(line for _, line in lines)
        ended = time.perf_counter()
    finally:
        run.kill()
    reader.join(timeout=30)
    output = "".join(line for _, line in lines)
    lost = [(when, line) for when, line in lines if "tracking lost" in line]
    assert len(lost) == 1, output
    ((noticed, line),) = lost
    assert line.startswith(f"tracking lost: the MLflow server {served.url} stopped answering ("), line
    assert noticed - killed < 15, output  # a few bounded retries, not MLflow's minutes of them
    assert ended - killed < 45, output  # the rest of the run, the test and the summary included
    assert "Traceback" not in output and "dashboard      http://127.0.0.1" in output
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 20 and "test/acc" in metrics["test"]
    assert (run_dir / metrics["best_checkpoint"]).is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def training_is_logged(server: str) -> bool:
    try:
        experiment = get(f"{server}/api/2.0/mlflow/experiments/get-by-name", experiment_name="train")["experiment"]
        runs = runs_of(server, experiment["experiment_id"])
    except urllib.error.HTTPError:  # no experiment yet
        return False
    return bool(runs) and any(metric["key"] == "train/loss" for metric in runs[0]["data"].get("metrics", []))
