"""`resume=<run dir, checkpoint or sweep dir>` on the command line: the arguments that continue that run, or that
sweep, in its own folder.

    python -m experiments resume=outputs/train/runs/<run>            # a run, from its last.ckpt
    python -m experiments resume=outputs/train/multiruns/<sweep>     # a grid or a search, where it stopped

A sweep folder is one with Hydra's `multirun.yaml` at its root: the sweep's own command line is read back from
it and run again into the same folder. Jobs that finished are not run again (run/sweep.py), a job that was cut
off goes on from its last checkpoint, and a search goes on with the trials its study lacks (run/search.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from experiments.core.errors import UserError
from experiments.core.run_dir import RunDir
from experiments.run.search_space import as_override_value

SWEEP_RECORD = "multirun.yaml"  # Hydra writes it at the root of every sweep folder


def find_checkpoint(value: str) -> Path:
    """`resume=` takes a run directory (its last checkpoint) or a checkpoint file."""
    path = Path(value).expanduser().resolve()
    checkpoint = RunDir(path).last_checkpoint() if path.is_dir() else path
    if not checkpoint.is_file():
        raise UserError(
            f"resume={value}: no checkpoint at {checkpoint}; give a run directory, a .ckpt file or a sweep directory"
            f" (one with {SWEEP_RECORD})"
        )
    return checkpoint


def sweep_arguments(folder: Path, others: list[str]) -> list[str]:
    """The command line that ran the sweep in `folder` (as its multirun.yaml recorded it), into the same folder,
    with `others` on top."""
    recorded = OmegaConf.load(folder / SWEEP_RECORD).hydra
    hydra_overrides = [o for o in recorded.overrides.hydra if not o.startswith(("hydra.mode=", "hydra.sweep.dir="))]
    config_dirs = [s.path for s in recorded.runtime.config_sources if s.provider == "command-line"]
    return [
        "-m",
        *(argument for path in config_dirs for argument in ("--config-dir", path)),
        *("--config-name", recorded.job.config_name),
        *hydra_overrides,
        *recorded.overrides.task,
        f"hydra.sweep.dir={as_override_value(str(folder))}",
        *others,
    ]


@contextmanager
def resumed(arguments: list[str]) -> Iterator[list[str]]:
    """Command-line arguments with `resume=<run dir or checkpoint>` -> the arguments that continue that run:
    its composed config (`.hydra/config.yaml`) is the primary config, the other overrides apply on top,
    and Hydra writes to the same run directory (so the same log file and TensorBoard folder)."""
    value = next((a.split("=", 1)[1] for a in arguments if a.startswith("resume=")), None)
    if value in (None, "", "null"):
        yield arguments
        return
    others = [a for a in arguments if not a.startswith("resume=")]
    folder = Path(value).expanduser().resolve()
    if (folder / SWEEP_RECORD).is_file():
        yield sweep_arguments(folder, others)
        return
    checkpoint = find_checkpoint(value)
    try:
        run_dir = RunDir.of(checkpoint)
    except UserError as error:
        raise UserError(f"resume={value}: {error}; resume continues a run that this tool started") from error
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
