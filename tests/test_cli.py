"""End to end, as a user runs it: the real CLI in a subprocess, its files, its TensorBoard events, its wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO, run_cli


@pytest.mark.slow
def test_default_run_reaches_the_accuracy_bar_and_logs_to_tensorboard(tmp_path: Path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] >= 0.97  # the README's promise for the default CNN on digits
    assert metrics["epochs"] == 20
    assert f"run directory  {run_dir}" in result.stdout
    assert f"tensorboard --logdir {run_dir}" in result.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {
        "last.ckpt",
        Path(metrics["best_checkpoint"]).name,
    }

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "train/loss", "train/acc", "train/f1", "val/loss", "val/acc", "val/f1"} <= scalars
    assert "train/samples_per_s" in scalars
    val_acc = [event.value for event in events.Scalars("val/acc")]
    assert len(val_acc) == 20 and max(val_acc) == max(val_acc[-15:]) > 0.9  # it learned, not just started well


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories(tmp_path: Path):
    command = [sys.executable, "-m", "experiments", "debug=fast_dev_run", "model=mlp"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 2
    assert all((run / ".hydra" / "config.yaml").is_file() for run in runs)


def test_console_script_is_installed(tmp_path: Path):
    script = Path(sys.executable).with_name("experiments")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "model: cnn, mlp, rnn" in result.stdout


@pytest.mark.slow
def test_a_regular_wheel_install_carries_the_configs(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            REPO,
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("experiments-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "experiments/conf/config.yaml" in names and "experiments/conf/model/cnn.yaml" in names

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        check=True,
        timeout=300,
    )
    env = {"PYTHONPATH": str(site)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import experiments; print(experiments.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env={**env, "PATH": ""},
        check=True,
    )
    assert where.stdout.startswith(str(site))  # the wheel's copy, not the source tree
    result = run_cli("debug=fast_dev_run", "model=rnn", cwd=work, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((work / "outputs" / "train" / "runs").iterdir())) == 1
