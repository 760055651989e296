"""Train a model, or sweep many (the default command): the task of run/task.py, through Hydra's command line.

    python -m experiments                                  # the CNN on the bundled digits, offline
    python -m experiments model=rnn trainer.max_epochs=5 seed=7
    python -m experiments model=mlp optimizer=sgd optimizer.lr=0.1 model.width=512
    python -m experiments -m model=mlp,cnn,rnn             # a sweep: see run/sweep.py
    python -m experiments resume=outputs/train/runs/<run>  # continue a run where it stopped
    python -m experiments resume=outputs/train/multiruns/<sweep>  # a sweep or a search: the jobs it lacks
    python -m experiments --help                           # the config groups and their options
    python -m experiments --cfg job                        # print the composed config, run nothing

Hydra parses the command line and makes the run's directory; how a failure ends (one line and exit code 2
for a user's mistake, a traceback for a bug) is decided in core/errors.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.core.config import config_dir
from experiments.core.errors import classify, exit_for
from experiments.core.run_dir import RunDir
from experiments.run.resume import resumed
from experiments.run.sweep import run_job
from experiments.run.task import train


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def run(cfg: DictConfig) -> float | None:
    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return run_job(train, cfg)  # a failed job is recorded, and the sweep goes on: see run/sweep.py
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


def main(argv: list[str] | None = None) -> None:
    """Hydra parses the command line (`argv`, else the process's); a user's mistake ends in one line, exit code 2."""
    if argv is not None:
        sys.argv[1:] = argv
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach `describe` instead of its multi-line report
    try:
        with resumed(sys.argv[1:]) as sys.argv[1:]:
            run()
    except BrokenPipeError:  # `python -m experiments --help | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (Exception, KeyboardInterrupt) as error:  # a bad override; Ctrl+C before training started
        exit_for(error)
