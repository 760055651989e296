"""Every way a run can end early, through the real command line, as a single run and as a sweep's job, with
the last checkpoint on and set to null: a user's mistake, damaged data, a loss that turns NaN, Ctrl+C,
SIGTERM, SLURM's requeue signal and a bug. Each ends in the line, exit code and files that errors.py and
stop_signals.py promise.

The runs go through a small launcher that slows each training step a little and prints its number (so a
signal lands mid-epoch), and can turn the loss NaN or raise a bug at a given step.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import fixtures

pytestmark = pytest.mark.slow

LAUNCHER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    import experiments.models.model as model_module

    step = model_module.Model.training_step
    nan_at, bug_at = int(os.environ.get("NAN_AT_STEP", -1)), int(os.environ.get("BUG_AT_STEP", -1))

    def paced(self, batch, batch_idx):
        time.sleep(0.02)
        print(f"step {self.global_step}", flush=True)
        if self.global_step == bug_at:
            raise RuntimeError(f"a bug at step {bug_at}")
        loss = step(self, batch, batch_idx)
        # The optimiser step that follows is step number global_step + 1: the one the NaN stop reports.
        return loss * float("nan") if self.global_step + 1 == nan_at else loss

    model_module.Model.training_step = paced
    from experiments.commands.train import main

    sys.argv[0] = "experiments"
    main()
    """
)

QUICK = ("model=mlp", "trainer.accelerator=cpu", "logger=none", "trainer.max_epochs=1")
LONG = ("model=mlp", "trainer.accelerator=cpu", "logger=none", "trainer.max_epochs=50")
SIGUSR1 = getattr(signal, "SIGUSR1", None)


def launch(tmp_path: Path, *arguments: str, env: dict | None = None) -> subprocess.Popen:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    return subprocess.Popen(
        [sys.executable, str(launcher), *arguments],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        # As from a terminal: Ctrl+C does its default (a background job would inherit SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stopped_by(process: subprocess.Popen, signum: int) -> tuple[int, str, str]:
    """Wait for the third training step, send `signum`, and return (exit code, stdout, stderr)."""
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if line.strip() == "step 3" or time.monotonic() > deadline:
            break
    process.send_signal(signum)
    out, err = process.communicate(timeout=240)
    return process.returncode, "".join(seen) + out, err


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def fake_slurm(tmp_path: Path) -> dict:
    """SLURM's environment and an `scontrol` that records what it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    return {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def damaged_mnist(tmp_path: Path) -> str:
    root = tmp_path / "data"
    raw = fixtures.write_mnist(root)
    images = next(raw.glob("train-images*.gz"))
    images.write_bytes(images.read_bytes()[:100])  # cut short
    return str(root)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def the_run(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    return run_dir


def summary_row(sweep_dir: Path) -> dict:
    with open(sweep_dir / "summary.csv", newline="") as file:
        (row,) = csv.DictReader(file)
    return row


NO_LAST = "callbacks.last_checkpoint=null"
DEBUG_HINT = "  (EXPERIMENTS_DEBUG=1 shows the traceback)"
NOTHING_SAVED = "nothing was saved (no last checkpoint is configured: callbacks.last_checkpoint)"


@pytest.fixture(
    params=[(s, last) for s in (signal.SIGINT, signal.SIGTERM, SIGUSR1) for last in ("on", "null")],
    ids=[f"{name}-{last}" for name in ("SIGINT", "SIGTERM", "SIGUSR1") for last in ("on", "null")],
)
def stop_case(request, tmp_path) -> tuple[int, str, list[str], dict | None]:
    """(signal, last checkpoint on or null, the overrides for that, the environment: SLURM's for SIGUSR1)."""
    signum, last = request.param
    if signum is None:
        pytest.skip("no SIGUSR1 on this system")
    extra = [NO_LAST] if last == "null" else []
    return signum, last, extra, fake_slurm(tmp_path) if signum == SIGUSR1 else None


@pytest.mark.parametrize("last", ["on", "null"])
def test_the_users_mistakes_and_damaged_data_are_one_line_and_exit_2(tmp_path, last):
    extra = [NO_LAST] if last == "null" else []
    code, _, err = finished(launch(tmp_path, *QUICK, *extra, "optimizer.lr=-1"))
    assert code == 2 and last_line(err).startswith("error: optimizer.lr=-1 is not allowed")
    runs = tmp_path / "outputs" / "train" / "runs"
    assert "Traceback" not in err and not (runs.exists() and any(runs.iterdir()))  # no run directory left

    data = damaged_mnist(tmp_path)
    code, _, err = finished(
        launch(tmp_path, *QUICK, *extra, "data=mnist", f"data.data_dir={data}", "data.download=false")
    )
    assert code == 2 and "Traceback" not in err
    assert last_line(err).endswith(
        "; delete it, or allow data.download, to get a fresh copy  (EXPERIMENTS_DEBUG=1 shows the traceback)"
    )


@pytest.mark.parametrize("last", ["on", "null"])
def test_a_nan_loss_is_one_line_and_exit_1_and_a_bug_keeps_its_traceback(tmp_path, last):
    extra = [NO_LAST] if last == "null" else []
    code, _, err = finished(launch(tmp_path, *QUICK, *extra, env={"NAN_AT_STEP": "3"}))
    assert code == 1 and "Traceback" not in err
    assert last_line(err).startswith("error: the training loss became nan at step 3 (epoch 1")

    code, _, err = finished(launch(tmp_path, *QUICK, *extra, env={"BUG_AT_STEP": "3"}))
    assert code == 1 and "Traceback" in err and last_line(err) == "RuntimeError: a bug at step 3"


def test_a_stop_signal_saves_at_the_end_of_the_step_or_says_why_not(tmp_path, stop_case):
    signum, last, extra, env = stop_case
    code, _, err = stopped_by(launch(tmp_path, *LONG, *extra, env=env), signum)
    run_dir = the_run(tmp_path)
    name = signal.Signals(signum).name
    assert code == 128 + signum, err
    line = last_line(err)
    assert line.startswith(f"stopped by {name} at step ") and "Traceback" not in err
    if last == "null":
        assert line.endswith(NOTHING_SAVED)
        assert not (run_dir / "checkpoints" / "last.ckpt").exists()
        assert not (tmp_path / "scontrol.log").exists()  # a requeued job without a checkpoint would start over
        return
    assert line.endswith(f"; continue with: python -m experiments resume={run_dir}")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    if signum == SIGUSR1:
        assert "; SLURM job 4242 requeued;" in line
        assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"


@pytest.mark.parametrize("last", ["on", "null"])
def test_a_sweep_records_a_failed_job_and_goes_on(tmp_path, last):
    extra = [NO_LAST] if last == "null" else []
    data = damaged_mnist(tmp_path)
    cases = {
        "user": ((), {}, "optimizer.lr=-1 is not allowed"),
        "data": (("data=mnist", f"data.data_dir={data}", "data.download=false"), {}, "cannot decompress"),
        "nan": ((), {"NAN_AT_STEP": "3"}, "the training loss became nan at step 3"),
        "bug": ((), {"BUG_AT_STEP": "3"}, "RuntimeError: a bug at step 3"),
    }
    for case, (overrides, env, error) in cases.items():
        sweep_dir = tmp_path / case
        bad = ["optimizer.lr=-1"] if case == "user" else []
        code, _, err = finished(
            launch(tmp_path, "-m", f"hydra.sweep.dir={sweep_dir}", *QUICK, *extra, *overrides, *bad, env=env)
        )
        assert code == 0, err
        row = summary_row(sweep_dir)
        assert row["status"] == "failed" and error in row["error"], (case, row)
        log = (sweep_dir / "0" / "train.log").read_text()
        assert ("Traceback" in log) == (case == "bug")  # a bug's traceback is kept, in the job's log


def test_a_stop_signal_stops_the_sweep_and_a_requeued_job_continues(tmp_path, stop_case):
    signum, last, extra, env = stop_case
    sweep_dir = tmp_path / "sweep"
    arguments = ("-m", f"hydra.sweep.dir={sweep_dir}", *LONG, "trainer.max_epochs=3", *extra)
    code, _, err = stopped_by(launch(tmp_path, *arguments, env=env), signum)
    assert code == 128 + signum, err
    assert last_line(err).startswith(f"stopped by {signal.Signals(signum).name} at step ")
    assert (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file() == (last == "on")
    if signum != SIGUSR1:
        return
    # SLURM starts the requeued job again, in the same directory: it goes on from the checkpoint.
    code, _, err = finished(launch(tmp_path, *arguments, env=env))
    assert code == 0, err
    row = summary_row(sweep_dir)
    if last == "on":
        assert row["status"] == "completed" and row["epochs"] == "3", row
        assert "resuming from" in (sweep_dir / "0" / "train.log").read_text()
    else:
        assert row["status"] == "failed" and row["error"].startswith("cut off (timed out or preempted)")
