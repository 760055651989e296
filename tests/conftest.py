"""Shared fixtures. Tests run one torch thread per process: two threads on two shared cores collapse."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from experiments.core.config import compose
from experiments.run.recovery import load_checkpoint

os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the CLI subprocesses
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

# The reliability tests' run: short, deterministic, a last.ckpt every 5 steps.
RUN = (
    "model=mlp",
    "trainer.max_epochs=4",  # 20 steps per epoch on the digits
    "deterministic=true",
    "trainer.accelerator=cpu",
    "callbacks.last_checkpoint.every_n_train_steps=5",
)


@pytest.fixture(autouse=True)
def root_logger_as_it_was():
    """A run started in-process through `main()` sets up Hydra's job logging, whose console handler writes to
    that test's captured stderr: the root logger gets its own handlers back after each test, so that a later
    test does not log into a closed stream ("--- Logging error ---" in its captured output)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


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


def checkpoint_step(path: Path) -> int:
    return load_checkpoint(path)["global_step"]


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint a run's metrics.json names: relative to the run, which may have moved."""
    from experiments.core.run_dir import RunDir

    return RunDir(Path(run_dir)).best_checkpoint()


def final(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics[key] for key in ("val", "test", "objective", "epochs", "global_steps")}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    """A short run of the MLP on the digits, laid out as the command line leaves it: (its directory, metrics)."""
    from omegaconf import OmegaConf

    from experiments.core.config import compose
    from experiments.run.task import train

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose([f"paths.output_dir={run_dir}", "model=mlp", "trainer.max_epochs=2"])
    train(cfg)
    (run_dir / ".hydra").mkdir()  # what Hydra writes beside every run
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir, json.loads((run_dir / "metrics.json").read_text())
