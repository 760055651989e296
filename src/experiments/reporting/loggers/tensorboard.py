"""TensorBoard (conf/logger/tensorboard.yaml, the default): curves, figures, tables and the HParams tab."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import loggers as lightning

from experiments.reporting.loggers.base import RunLogger, markdown_table


class TensorBoard(lightning.TensorBoardLogger, RunLogger):
    """Lightning's TensorBoardLogger, with the dashboards' figures and the run's HParams entry."""

    def add_figure(self, tag: str, figure, step: int) -> None:
        self.experiment.add_figure(tag, figure, step, close=False)  # the other loggers draw it too

    def add_table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        self.experiment.add_text(tag, markdown_table(columns, rows), step)  # the text tab renders Markdown

    def log_final(self, hparams: dict, metrics: dict) -> None:
        # Tags of their own: under their usual names these would add a step-0 point to each curve.
        self.log_hyperparams(hparams, {f"final/{key.replace('/', '_')}": value for key, value in metrics.items()})
        self.experiment.flush()

    def viewer_command(self, output_dir: Path) -> str:
        return f"tensorboard --logdir {output_dir}"
