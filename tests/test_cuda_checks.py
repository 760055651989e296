"""Runs without a GPU do not ask the NVIDIA driver at every optimiser step whether one is there."""

from __future__ import annotations

import os

import pytest
import torch

from experiments.run.nvml import NVML_CHECK, plain_cuda_checks
from experiments.run.task import train


def test_the_variable_is_lifted_on_the_cpu_only_and_always_put_back(monkeypatch):
    monkeypatch.setenv(NVML_CHECK, "1")
    with pytest.raises(RuntimeError), plain_cuda_checks(torch.device("cpu")):
        assert NVML_CHECK not in os.environ
        raise RuntimeError("a run that fails")
    assert os.environ[NVML_CHECK] == "1"
    with plain_cuda_checks(torch.device("cuda")):  # a GPU run keeps Lightning's fork-safe check
        assert os.environ[NVML_CHECK] == "1"


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="a CPU-only build of torch never asks the driver")
def test_a_cpu_run_asks_the_driver_no_more_often_for_more_steps(make_config, monkeypatch, tmp_path):
    queries = []
    probe = torch.cuda._raw_device_count_nvml  # what torch's NVML-based availability check calls

    def counted() -> int:
        queries.append(1)
        return probe()

    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", counted)
    monkeypatch.setenv(NVML_CHECK, "1")  # as importing Lightning left it
    counts = []
    for epochs in (1, 2):  # 20 and 40 optimiser steps; setting up the Trainer asks a few times either way
        queries.clear()
        run = f"paths.output_dir={tmp_path / str(epochs)}"
        train(make_config("model=mlp", f"trainer.max_epochs={epochs}", "test=false", "logger=none", run))
        counts.append(len(queries))
    assert counts[0] == counts[1]
    assert os.environ[NVML_CHECK] == "1"
