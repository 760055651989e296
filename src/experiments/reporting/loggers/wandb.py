"""Weights & Biases (conf/logger/wandb.yaml; the tracking extra), offline unless asked otherwise.

A sweep is one W&B group, named after its directory, with one run per job named by its overrides; the project
is the task's name (W&B's projects take no "/").
"""

from __future__ import annotations

import io
from pathlib import Path

from lightning.pytorch import loggers as lightning
from omegaconf import DictConfig, OmegaConf

from experiments.core.run_dir import RunDir
from experiments.reporting.loggers.base import RunLogger, job_names, png, require_extra


class Wandb(lightning.WandbLogger, RunLogger):
    """Lightning's WandbLogger, offline by default: nothing leaves the machine until `wandb sync`."""

    def __init__(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        group: str | None = None,
        offline: bool = True,
        tags: list[str] | None = None,
        notes: str | None = None,
        **kwargs,
    ) -> None:
        require_extra("wandb", "logger=wandb")
        import wandb

        if wandb.run is not None:  # an earlier job of this sweep, in this process, that failed: it would be reused
            wandb.run.finish(exit_code=1)

        experiment, run, sweep = job_names()
        super().__init__(
            project=project or experiment.split("/")[0],  # W&B's projects take no "/": a sweep is a group
            name=name or run,
            group=group or sweep,
            offline=offline,
            tags=list(tags or []),
            notes=notes,
            **kwargs,
        )

    def add_figure(self, tag: str, figure, step: int) -> None:
        from PIL import Image

        self.log_image(key=tag, images=[Image.open(io.BytesIO(png(figure)))], step=step)

    def add_table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        self.log_table(key=tag, columns=columns, data=rows, step=step)

    def store_run_files(self, output_dir: Path, cfg: DictConfig) -> None:
        files = Path(self.experiment.dir)
        (files / "config.composed.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # W&B has a config.yaml
        (files / "metrics.json").write_bytes(RunDir(output_dir).metrics_file.read_bytes())

    def finish(self) -> None:
        self.experiment.finish()  # now, not at exit: the next job of a sweep in this process starts a run of its own

    def viewer_command(self, output_dir: Path) -> str | None:
        run = self.experiment
        return f"wandb sync {Path(run.dir).parent}" if run.offline else None
