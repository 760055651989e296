"""Sweeps as a user runs them: the CLI with -m, its summary, its failures, Optuna, launchers, TensorBoard's server."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # subprocess runs of the whole CLI: the full tier

BAD_DROPOUT = "model.dropout=2 is not allowed: it must be a number >= 0.0 and < 1.0"


def the_sweep(root: Path) -> Path:
    (sweep_dir,) = (root / "outputs" / "train" / "multiruns").iterdir()
    return sweep_dir


def read_summary(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Three jobs, two at a time in joblib's worker processes; the last is a user's mistake; TensorBoard on."""
    root = tmp_path_factory.mktemp("sweep")
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    marked = ["tags=[sweep,v2]", "notes=three dropouts"]
    result = run_cli("-m", *parallel, *marked, "model=mlp", "model.dropout=0.0,0.2,2", "trainer.max_epochs=3", cwd=root)
    return the_sweep(root), result  # one sweep directory: the workers' jobs landed in the launcher's


def test_parallel_jobs_share_the_cores_instead_of_oversubscribing_them(sweep):
    sweep_dir, result = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    for job in ("0", "1", "2"):
        log = (sweep_dir / job / "train.log").read_text()
        assert f"2 jobs at once on {cores} cores: {max(1, cores // 2)} torch threads per job" in log


def test_a_failed_job_is_recorded_and_the_others_complete(sweep):
    sweep_dir, result = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    rows = read_summary(sweep_dir)
    assert [(row["job"], row["status"]) for row in rows][-1] == ("2", "failed")
    assert rows[-1]["error"] == BAD_DROPOUT and rows[-1]["objective"] == ""
    completed = rows[:2]
    assert {row["job"] for row in completed} == {"0", "1"}
    assert all(row["status"] == "completed" and row["epochs"] == "3" for row in completed)
    assert float(completed[0]["objective"]) >= float(completed[1]["objective"])  # best first
    for row in completed:
        metrics = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
        assert float(row["test/acc"]) == pytest.approx(metrics["test"]["test/acc"])
        assert float(row["objective"]) == pytest.approx(metrics["objective"]["value"])
    failed = json.loads((sweep_dir / "2" / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == BAD_DROPOUT
    assert failed["tags"] == ["sweep", "v2"] and failed["notes"] == "three dropouts"  # a failed job's too

    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.startswith("3 jobs: 2 completed, 1 failed, 0 unfinished; ranked by val/acc (max)")
    best = next(line for line in markdown.splitlines() if line.startswith(f"best: job {completed[0]['job']} "))
    assert {"model=mlp", "tags=[sweep,v2]"} <= set(best.split()) and " model.dropout=0." in best  # all its overrides
    assert markdown.rstrip().splitlines()[-1].startswith("| 2 | model.dropout=2 |")
    assert markdown.rstrip().endswith(f"failed: {BAD_DROPOUT} |")
    with Image.open(sweep_dir / "summary.png") as plot:
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 100
    assert f"summary        {sweep_dir / 'summary.md'}" in result.stdout


def test_fail_fast_stops_the_sweep_at_the_first_failed_job(tmp_path):
    result = run_cli("-m", "model.dropout=2,0.1", "fail_fast=true", "logger=none", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: job 0 failed: {BAD_DROPOUT}  (fail_fast=true)"
    assert "Traceback" not in result.stderr
    sweep_dir = the_sweep(tmp_path)
    assert not (sweep_dir / "1").exists()
    assert [(row["job"], row["status"]) for row in read_summary(sweep_dir)] == [("0", "failed")]


def test_a_job_started_again_after_being_cut_off_is_recorded_not_rerun(tmp_path):
    # What submitit does to a job that ran out of time: it runs the same job again, in the same directory.
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "0").mkdir(parents=True)
    (sweep_dir / "0" / ".attempted").touch()
    result = run_cli("-m", f"hydra.sweep.dir={sweep_dir}", "model=mlp", "logger=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = read_summary(sweep_dir)
    assert row["status"] == "failed" and row["error"].startswith("cut off (timed out or preempted)")
    assert not (sweep_dir / "0" / "checkpoints").exists()


def test_optuna_search_survives_diverging_trials_and_names_the_best_parameters(tmp_path):
    # A learning rate of 1e12 makes the training loss diverge: those trials stop, recorded failed; the study goes on.
    result = run_cli(
        "hparams_search=digits_mlp",
        "hydra.sweeper.n_trials=4",
        "optimizer.lr=choice(0.003,1e12)",
        "objective=val/loss",
        "objective_mode=min",
        "trainer.max_epochs=2",
        "logger=none",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = the_sweep(tmp_path)
    rows = read_summary(sweep_dir)
    assert len(rows) == 4
    statuses = [row["status"] for row in rows]
    assert "completed" in statuses and "failed" in statuses
    errors = [row["error"] for row in rows if row["status"] == "failed"]
    assert all(re.match(r"the training loss became (nan|inf) at step \d+ ", error) for error in errors), errors

    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert rows[0]["status"] == "completed"
    assert float(rows[0]["objective"]) == pytest.approx(best["best_value"])
    searched = {"optimizer.lr", "model.width", "model.depth", "model.dropout", "data.batch_size"}
    assert set(best["best_params"]) == searched
    assert all(f"{key}={value}" in rows[0]["overrides"].split() for key, value in best["best_params"].items())
    (best_line,) = [line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("best:")]
    assert best_line.startswith(f"best: job {rows[0]['job']} ") and "hparams_search=digits_mlp" in best_line.split()
    assert best_line.endswith(f"  val/loss {best['best_value']:.4f}")
    assert all(f"{key}={value}" in best_line.split() for key, value in best["best_params"].items())

    # The study outlives the process, in study.db in the sweep folder; trial n ran in job folder n.
    import optuna

    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    states = {"completed": "COMPLETE", "failed": "FAIL"}
    assert {str(t.number): t.state.name for t in study.trials} == {r["job"]: states[r["status"]] for r in rows}
    assert study.best_value == pytest.approx(best["best_value"]) and str(study.best_trial.number) == rows[0]["job"]


def test_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    args = ["-m", "hydra/launcher=submitit_local", "model=mlp", "trainer.max_epochs=1", "logger=none"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = the_sweep(tmp_path)
    (row,) = read_summary(sweep_dir)
    assert row["status"] == "completed" and float(row["test/acc"]) > 0.5
    (job_log,) = (sweep_dir / ".submitit").glob("*/*_0_log.out")  # submitit's own process ran it
    log = job_log.read_text()
    assert "test accuracy" in log
    assert "epoch 1/1  train/loss " in log and "Epoch 0/0" not in log  # a batch job's log: plain lines, no bars


STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return raw if raw.startswith(b"\x89PNG") else json.loads(raw)


def test_tensorboard_serves_each_runs_curves_images_and_hparams(sweep):
    sweep_dir, _ = sweep
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep_dir), "--host", "127.0.0.1"]
    server = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/data"
    try:
        query = {"experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0, "sliceSize": 10}
        deadline = time.monotonic() + 90
        while True:  # the server reads the event files in the background: wait until it has both runs
            try:
                groups = fetch(f"{base}/plugin/hparams/session_groups", query)["sessionGroups"]
                if len(groups) == 2:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
            time.sleep(1)
        runs = sorted(group["name"] for group in groups)
        assert runs == sorted(fetch(f"{base}/runs")) == ["0/tensorboard", "1/tensorboard"]  # not the failed job
        for group in groups:
            job = group["name"].split("/")[0]
            metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
            assert group["hparams"]["model.dropout"] == {"0": 0.0, "1": 0.2}[job]
            assert group["hparams"]["tags"] == "sweep,v2" and group["hparams"]["notes"] == "three dropouts"
            assert group["hparams"]["model"] == "MLP" and group["hparams"]["optimizer.lr"] == 0.003
            final = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
            assert final["final/test_acc"] == pytest.approx(metrics["test"]["test/acc"])
            assert final["final/val_acc"] == pytest.approx(metrics["objective"]["value"])

            run = group["name"]
            val_acc = fetch(f"{base}/plugin/scalars/scalars?run={run}&tag=val/acc")
            assert len(val_acc) == 3 and max(point[2] for point in val_acc) == pytest.approx(final["final/val_acc"])
            tags = set(fetch(f"{base}/plugin/scalars/tags")[run])
            assert {"train/loss_step", "train/acc", "val/loss", "lr-AdamW/pg1", "train/samples_per_s"} <= tags
            learning_rates = [point[2] for point in fetch(f"{base}/plugin/scalars/scalars?run={run}&tag=lr-AdamW/pg1")]
            assert len(learning_rates) == 3 and learning_rates[1] > learning_rates[2]  # cosine decay

            images = fetch(f"{base}/plugin/images/tags")[run]
            assert {"val/confusion_matrix", "test/confusion_matrix", "val/misclassified"} <= set(images)
            (latest,) = fetch(f"{base}/plugin/images/images?run={run}&tag=test/confusion_matrix")
            assert fetch(f"{base}/plugin/images/individualImage?{latest['query']}").startswith(b"\x89PNG")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("search", ["digits_mlp", "mnist_mlp", "imdb_mlp"])
def test_every_search_composes_with_our_sweeper_tpe_and_the_objectives_direction(search):
    from experiments.core.config import compose

    cfg = compose([f"hparams_search={search}", "objective=val/loss", "objective_mode=min"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert cfg.data._target_.lower().endswith(f"{search.split('_')[0]}datamodule")
    assert cfg.model._target_ == "experiments.models.nets.MLP"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.direction == "minimize"
    assert sweeper._target_ == "hydra_plugins.experiments_search.OptunaSweeper" and cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.pruner._target_ == "optuna.pruners.NopPruner" and sweeper.sampler.seed == cfg.seed
    assert {"optimizer.lr", "model.width", "model.depth", "model.dropout", "data.batch_size"} <= set(sweeper.params)
