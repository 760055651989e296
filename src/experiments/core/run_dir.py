"""A run's directory, the one place that knows its layout, and `metrics.json`, the record of how the run ended.

    <run>/.hydra/config.yaml      the composed config: what `resume=` and evaluation rebuild the run from
    <run>/.hydra/overrides.yaml   the command line's overrides: what tells a sweep's jobs apart
    <run>/<job name>.log          the log (train.log)
    <run>/tensorboard/            curves and dashboards (conf/logger)
    <run>/checkpoints/            best-*.ckpt and last.ckpt, or wherever the callbacks config puts them
    <run>/metrics.json            how the run ended: its figures, or for a failed sweep job why it failed
    <run>/.attempted              a sweep job started here: a launcher that starts it again must not start over

The bottom layer: it imports nothing of this package but `errors` and `atomic`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.core.atomic import written_atomically
from experiments.core.errors import UserError

CHECKPOINT_SETTINGS = ("callbacks.last_checkpoint.dirpath", "callbacks.model_checkpoint.dirpath")


@dataclass
class Objective:
    metric: str
    mode: str  # max | min
    value: float | None = None  # None: the run failed


@dataclass
class Metrics:
    """What `metrics.json` holds. Written once by the run at its end; a sweep job that failed afterwards (or
    before) is recorded as failed, with what the run measured before it failed."""

    objective: Objective
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    global_steps: int | None = None
    fit_seconds: float | None = None
    wall_seconds: float | None = None
    samples_per_second: float | None = None
    parameters: int | None = None
    best_checkpoint: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    status: str = "completed"  # completed | failed | pruned (a search stopped it early: run/trial.py)
    error: str = ""

    def write(self, path: Path) -> None:
        with written_atomically(path) as temporary:  # never seen half-written
            temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Metrics:
        values = json.loads(path.read_text())
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**{**known, "objective": Objective(**values.get("objective", {"metric": "", "mode": "max"}))})


def final_objective(val: Mapping[str, float], best_score: float | None, metric: str) -> float:
    """The run's objective: the best checkpoint's score (the value checkpoints select on) when one was kept,
    else the last validation's value of the metric (NaN when it never validated)."""
    return float(best_score) if best_score is not None else float(val.get(metric, math.nan))


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def overrides_file(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def attempted_marker(self) -> Path:
        return self.path / ".attempted"

    def log_file(self, job_name: str) -> Path:
        return self.path / f"{job_name}.log"

    def config(self) -> DictConfig:
        """The run's composed config, with its paths pointing into this directory (wherever it now lies)."""
        cfg = OmegaConf.load(self.config_file)
        if "output_dir" in cfg.get("paths", {}):  # `${hydra:runtime.output_dir}`: resolvable in the run alone
            cfg.paths.output_dir = str(self.path)
        return cfg

    def checkpoints(self) -> Path:
        """The folder the run's checkpoint callbacks write to, as its config sets it."""
        if self.config_file.is_file():
            cfg = self.config()
            for key in CHECKPOINT_SETTINGS:
                folder = OmegaConf.select(cfg, key, default=None)
                if folder:
                    return Path(folder)
        return self.path / "checkpoints"

    def last_checkpoint(self) -> Path:
        return self.checkpoints() / "last.ckpt"

    def best_checkpoint(self) -> Path | None:
        if not self.metrics_file.is_file():
            return None
        best = Metrics.read(self.metrics_file).best_checkpoint
        return self.resolve(best) if best else None

    def recorded(self, path: str) -> str:
        """A file's path as metrics.json keeps it: relative to the run when it lies inside, so that the folder can
        be moved or copied (fetched from a cluster, shared) and still name its own files."""
        if not path:
            return path
        try:
            return Path(path).resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:  # elsewhere (a checkpoint folder set outside the run): as it is
            return path

    def resolve(self, recorded: str) -> Path:
        """The file a recorded path names, in this directory wherever it now lies. A run recorded before paths were
        kept relative names its checkpoints by the absolute path they had where it ran: the file of that name in
        the run's own checkpoint folder comes first, so a copy reads its own files, not the original's."""
        path = Path(recorded)
        if not path.is_absolute():
            return self.path / path
        own = self.checkpoints() / path.name
        return own if own.is_file() else path

    def is_empty_but_for_hydra(self, job_name: str) -> bool:
        """Nothing of the run's own yet: only what Hydra wrote as the job started."""
        hydra_files = {".hydra", self.log_file(job_name).name}
        return self.path.is_dir() and {path.name for path in self.path.iterdir()} <= hydra_files

    @classmethod
    def of(cls, path: Path) -> RunDir:
        """The run a directory or a checkpoint file belongs to: the nearest folder holding `.hydra/config.yaml`."""
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise UserError(f"{path}: no such run directory or checkpoint")
        for candidate in (path, *path.parents)[:4]:  # a checkpoint sits a folder or two below its run
            if (candidate / ".hydra" / "config.yaml").is_file():
                return cls(candidate)
        raise UserError(f"{path} is not in a run directory: no .hydra/config.yaml beside it or above it")


def this_jobs_sweep_dir() -> Path:
    """The job's own directory minus its subdir: `hydra.sweep.dir` re-resolved in a worker could differ."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    depth = len(Path(str(hydra.sweep.subdir)).parts)
    return Path(hydra.runtime.output_dir).parents[depth - 1]
