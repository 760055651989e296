"""`resume=<sweep>` after the whole sweep was killed (SIGKILL to its process group, as an OOM killer or a lost
node would): finished jobs are not run again, the job that was cut off goes on from its last.ckpt, the summary
covers both sessions, and one process at a time runs a sweep folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # whole sweeps, killed and resumed

# Long enough per job (5 epochs of 20 steps) for a kill to land inside one; a last.ckpt every 5 steps.
SHORT_JOBS = ["trainer.max_epochs=5", "logger=none", "callbacks.last_checkpoint.every_n_train_steps=5"]


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """The CLI in its own process group, so that a kill reaches every process it started."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"it ended before the kill: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def the_sweep(root: Path) -> Path:
    (sweep_dir,) = (root / "outputs" / "train" / "multiruns").iterdir()
    return sweep_dir


def finished(sweep_dir: Path) -> dict[str, int]:
    """Job folder -> its metrics.json's modification time, for the jobs that have one."""
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}


def cut_off_in_job(sweep_dir: Path, job: str, done: int) -> Callable[[], bool]:
    """`done` jobs finished and job `job` has saved a last.ckpt but not finished."""
    last, record = sweep_dir / job / "checkpoints" / "last.ckpt", sweep_dir / job / "metrics.json"
    return lambda: len(finished(sweep_dir)) == done and last.is_file() and not record.exists()


def test_a_killed_grid_resumes_with_the_unfinished_jobs_only_and_one_process_at_a_time(tmp_path):
    sweep_dir = tmp_path / "grid"
    first = start_cli("-m", "model=mlp,cnn", "seed=0,1,2", *SHORT_JOBS, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    kill_when(first, cut_off_in_job(sweep_dir, "2", done=2))
    before = finished(sweep_dir)
    assert set(before) == {"0", "1"}

    resuming = start_cli(f"resume={sweep_dir}", cwd=tmp_path)
    try:
        log = sweep_dir / "0" / "train.log"
        deadline = time.monotonic() + 120
        while "earlier session" not in (log.read_text() if log.is_file() else ""):  # it holds the sweep's lock now
            assert resuming.poll() is None and time.monotonic() < deadline, resuming.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        second = run_cli(f"resume={sweep_dir}", cwd=tmp_path)
        assert second.returncode == 2
        assert (
            second.stderr.strip() == f"error: {sweep_dir} is being run by another process; wait for it to end, or"
            " stop it  (EXPERIMENTS_DEBUG=1 shows the traceback)"
        )
        assert resuming.wait(timeout=300) == 0, resuming.stderr.read().decode()[-3000:]
    finally:
        if resuming.poll() is None:
            os.killpg(resuming.pid, signal.SIGKILL)

    after = finished(sweep_dir)
    assert sorted(after) == ["0", "1", "2", "3", "4", "5"] and len(list(sweep_dir.glob("*/.hydra"))) == 6
    assert {job: after[job] for job in before} == before  # the two that had ended were not run again
    for job in before:
        assert (
            "ended (completed) in an earlier session of this sweep: not run again"
            in (sweep_dir / job / "train.log").read_text()
        )
    resumed = (sweep_dir / "2" / "train.log").read_text()
    assert f"job 2 was cut off: resuming from {sweep_dir / '2' / 'checkpoints' / 'last.ckpt'}" in resumed
    metrics = json.loads((sweep_dir / "2" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 5 and metrics["global_steps"] == 100
    summary = (sweep_dir / "summary.md").read_text()
    assert summary.startswith("6 jobs: 6 completed, 0 failed")


def test_a_killed_search_resumes_to_exactly_n_trials(tmp_path):
    import optuna

    sweep_dir = tmp_path / "search"
    search = ["hparams_search=digits_mlp", "hydra.sweeper.n_trials=4", *SHORT_JOBS, f"hydra.sweep.dir={sweep_dir}"]
    first = start_cli(*search, cwd=tmp_path)
    kill_when(first, cut_off_in_job(sweep_dir, "1", done=1))
    before = finished(sweep_dir)
    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    params = study.trials[1].params

    result = run_cli(f"resume={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    assert [(t.number, t.state.name) for t in study.trials] == [(n, "COMPLETE") for n in range(4)]
    assert study.trials[1].params == params  # the trial that was cut off went on, with its own values
    after = finished(sweep_dir)
    assert sorted(after) == ["0", "1", "2", "3"] and after["0"] == before["0"]
    assert "job 1 was cut off: resuming from" in (sweep_dir / "1" / "train.log").read_text()
    for trial in study.trials:
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert metrics["objective"]["value"] == pytest.approx(trial.value)
    assert (sweep_dir / "summary.md").read_text().startswith("4 jobs: 4 completed, 0 failed")


def test_a_sweep_stopped_by_sigterm_says_how_to_resume_it_and_resume_finishes_it(tmp_path):
    sweep_dir = tmp_path / "grid"
    sweep = start_cli("-m", "seed=0,1,2", "model=mlp", *SHORT_JOBS, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    ready = cut_off_in_job(sweep_dir, "1", done=1)
    deadline = time.monotonic() + 240
    while not ready():
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    sweep.send_signal(signal.SIGTERM)  # to the process that runs the sweep (and, with this launcher, its jobs)
    assert sweep.wait(timeout=120) == 128 + signal.SIGTERM
    line = sweep.stderr.read().decode().strip().splitlines()[-1]
    assert line.startswith("stopped by SIGTERM at step ") and " in job 1; " in line
    assert line.endswith(f"; continue with: python -m experiments resume={sweep_dir}")

    result = run_cli(f"resume={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(finished(sweep_dir)) == ["0", "1", "2"]
    assert (sweep_dir / "summary.md").read_text().startswith("3 jobs: 3 completed, 0 failed")
