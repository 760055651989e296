"""Shared fixtures. Tests run one torch thread per process: two threads on two shared cores collapse."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from experiments.config import compose

os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the CLI subprocesses
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the real config with overrides, writing the run's outputs under the test's tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose([f"paths.output_dir={tmp_path / 'run'}", *overrides])

    return make


def run_cli(
    *args: str, cwd: Path, timeout: float = 300, env: dict | None = None, module: str = "experiments"
) -> subprocess.CompletedProcess:
    """`python -m experiments ARGS` (or another module of ours) in a fresh process, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
