"""The command line: `python -m experiments` (or `experiments`) runs the task of train.py, once or as a sweep.

    python -m experiments                                  # the CNN on the bundled digits, offline
    python -m experiments model=rnn trainer.max_epochs=5 seed=7
    python -m experiments model=mlp optimizer=sgd optimizer.lr=0.1 model.width=512
    python -m experiments -m model=mlp,cnn,rnn             # a sweep: see sweep.py
    python -m experiments resume=outputs/train/runs/<run>  # continue a run where it stopped
    python -m experiments --help                           # the config groups and their options
    python -m experiments --cfg job                        # print the composed config, run nothing

Hydra parses the command line and makes the run's directory; how a failure ends (one line and exit code 2
for a user's mistake, a traceback for a bug) is decided in errors.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments.config import config_dir
from experiments.errors import UserError, classify, exit_for
from experiments.runs import RunDir
from experiments.sweep import run_job
from experiments.train import train


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def run(cfg: DictConfig) -> float | None:
    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return run_job(train, cfg)  # a failed job is recorded, and the sweep goes on: see sweep.py
        return train(cfg)
    except Exception as error:
        if classify(error).users_mistake and not cfg.get("resume"):
            discard_unstarted_run()
        exit_for(error)  # here, before Hydra adds its own report of the failed job


def discard_unstarted_run() -> None:
    """A run that a user error stopped before it wrote anything of its own leaves no directory behind."""
    hydra_config = HydraConfig.get()
    run_dir = RunDir(Path(hydra_config.runtime.output_dir))
    if run_dir.is_empty_but_for_hydra(hydra_config.job.name):
        shutil.rmtree(run_dir.path, ignore_errors=True)


def main() -> None:
    """Console entry point: Hydra parses the command line; a user's mistake ends in one line and exit code 2."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach `describe` instead of its multi-line report
    try:
        with resumed(sys.argv[1:]) as sys.argv[1:]:
            run()
    except BrokenPipeError:  # `python -m experiments --help | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (Exception, KeyboardInterrupt) as error:  # a bad override; Ctrl+C before training started
        exit_for(error)


def find_checkpoint(value: str) -> Path:
    """`resume=` takes a run directory (its last checkpoint) or a checkpoint file."""
    path = Path(value).expanduser().resolve()
    checkpoint = RunDir(path).last_checkpoint() if path.is_dir() else path
    if not checkpoint.is_file():
        raise UserError(f"resume={value}: no checkpoint at {checkpoint}; give a run directory or a .ckpt file")
    return checkpoint


@contextmanager
def resumed(arguments: list[str]) -> Iterator[list[str]]:
    """Command-line arguments with `resume=<run dir or checkpoint>` -> the arguments that continue that run:
    its composed config (`.hydra/config.yaml`) is the primary config, the other overrides apply on top,
    and Hydra writes to the same run directory (so the same log file and TensorBoard folder)."""
    value = next((a.split("=", 1)[1] for a in arguments if a.startswith("resume=")), None)
    if value in (None, "", "null"):
        yield arguments
        return
    checkpoint = find_checkpoint(value)
    try:
        run_dir = RunDir.of(checkpoint)
    except UserError as error:
        raise UserError(f"resume={value}: {error}; resume continues a run that this tool started") from error
    others = [a for a in arguments if not a.startswith("resume=")]
    # Hydra rewrites the run's .hydra/ with the new settings as the job starts. Until the resumed run has
    # saved a checkpoint of its own, that record goes back to what it was if the run fails (settings that
    # do not fit the checkpoint, Ctrl+C): the next `resume=` must find the settings the checkpoint has.
    record = {path: path.read_bytes() for path in run_dir.config_file.parent.iterdir() if path.is_file()}
    checkpoints_before = _checkpoint_times(run_dir)
    with tempfile.TemporaryDirectory(prefix="experiments-resume-") as folder:
        # Our Hydra settings (run directory, log format) from conf/hydra, then the run's config as it was.
        saved = OmegaConf.to_container(OmegaConf.load(run_dir.config_file))
        saved["init_from"] = None  # a run started from other weights goes on from its own checkpoint
        primary = {"defaults": [{"hydra": "default"}, "_self_"], **saved}
        OmegaConf.save(OmegaConf.create(primary), Path(folder) / "resumed_run.yaml")
        try:
            yield [
                *("--config-dir", folder, "--config-name", "resumed_run"),
                *others,
                f"++resume={checkpoint}",
                f"hydra.run.dir={run_dir.path}",
            ]
        except BaseException:  # a user error ends in SystemExit
            if _checkpoint_times(run_dir) == checkpoints_before:
                for path, content in record.items():
                    path.write_bytes(content)
            raise


def _checkpoint_times(run_dir: RunDir) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in run_dir.checkpoints().glob("*.ckpt")}
