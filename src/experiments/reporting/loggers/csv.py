"""CSV files (conf/logger/csv.yaml): `metrics.csv` and the params in `hparams.yaml`, in the run's csv/ folder."""

from __future__ import annotations

from lightning.pytorch import loggers as lightning

from experiments.reporting.loggers.base import RunLogger


class CSV(lightning.CSVLogger, RunLogger):
    """Lightning's CSVLogger: the params and curves, no figures; the run's own files are beside it already."""
