"""Sweep jobs run side by side (hydra/launcher=joblib): the cores are shared out, and on a machine with several
GPUs each worker process takes its own GPU. The GPUs are a faked CUDA_VISIBLE_DEVICES list: no GPU is needed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from experiments.run import sweep

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
WORKER = """
import os, sys
from pathlib import Path
import torch
from omegaconf import OmegaConf
from experiments.run import sweep
launcher = OmegaConf.create({"_target_": sys.argv[1], "n_jobs": int(sys.argv[2])})
sweep.give_each_parallel_job_a_gpu(launcher, Path(sys.argv[3]))
sweep.give_each_parallel_job_a_gpu(launcher, Path(sys.argv[3]))  # its next job: the same slot
print(os.environ.get("CUDA_VISIBLE_DEVICES", "untouched"), flush=True)
sys.stdin.read()  # holds its slot until the test lets it go, as a worker does between jobs
"""


def workers(tmp_path, count: int, n_jobs: int, gpus: str | None, launcher: str = JOBLIB) -> list[str]:
    """What CUDA_VISIBLE_DEVICES each of `count` worker processes, alive together, ends up with."""
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    env.update({"CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else {})
    started = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, launcher, str(n_jobs), str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        return sorted(worker.stdout.readline().strip() for worker in started)
    finally:
        for worker in started:
            worker.communicate("", timeout=60)


def test_parallel_jobs_counts_joblibs_workers_only():
    assert sweep.parallel_jobs(OmegaConf.create({"_target_": JOBLIB, "n_jobs": 3})) == 3
    assert sweep.parallel_jobs(OmegaConf.create({"_target_": JOBLIB, "n_jobs": -1})) == sweep.usable_cores()
    assert sweep.parallel_jobs(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher"})) == 1


@pytest.mark.slow  # nine fresh interpreters
def test_each_parallel_worker_sees_its_own_gpu_and_they_share_out_evenly(tmp_path):
    assert workers(tmp_path / "a", 2, n_jobs=2, gpus="3,5") == ["3", "5"]
    assert workers(tmp_path / "b", 4, n_jobs=4, gpus="0,1") == ["0", "0", "1", "1"]  # two jobs per GPU


@pytest.mark.slow
def test_one_gpu_or_one_job_at_a_time_leaves_the_devices_alone(tmp_path):
    assert workers(tmp_path / "a", 2, n_jobs=2, gpus="7") == ["7", "7"]
    assert workers(tmp_path / "b", 1, n_jobs=1, gpus="0,1") == ["0,1"]
    assert workers(tmp_path / "c", 1, n_jobs=2, gpus="0,1", launcher="basic") == ["0,1"]
    if torch.cuda.device_count() < 2:  # CUDA_VISIBLE_DEVICES unset: the GPUs torch counts, none or one here
        assert workers(tmp_path / "d", 2, n_jobs=2, gpus=None) == ["untouched", "untouched"]


def test_a_slot_comes_free_when_its_worker_is_gone(tmp_path):
    first, slot = sweep.claim_slot(tmp_path, 2)
    second, other = sweep.claim_slot(tmp_path, 2)
    assert (slot, other) == (0, 1)
    first.release()
    third, again = sweep.claim_slot(tmp_path, 2)
    assert again == 0
    second.release()
    third.release()
