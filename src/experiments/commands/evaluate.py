"""Test a trained model again: the run's own config, data and checkpoint.

    experiments evaluate outputs/train/runs/<run>                   # its best checkpoint
    experiments evaluate outputs/train/runs/<run>/checkpoints/last.ckpt
    experiments evaluate <run> data.data_dir=/elsewhere/data        # config overrides, key=value
    experiments evaluate <run> data=mnist                           # or another data option

The run's composed config (`.hydra/config.yaml`) rebuilds its data module with the same split (run/finished.py);
the checkpoint is read with `torch.load(weights_only=True)` (it holds plain values only) and the net is
rebuilt from the hyperparameters inside it. Per-example predictions: `experiments predict`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from experiments.core.errors import exit_for


def evaluate(path: Path, overrides: list[str]) -> tuple[dict[str, float], Path, str]:
    """(the test metrics, the checkpoint, the summary's lines) of the run at `path`."""
    from experiments.run.finished import evaluation_trainer, load
    from experiments.run.task import headline

    cfg, datamodule, model, checkpoint = load(path, overrides)
    results = evaluation_trainer(cfg).test(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()}
    shown = {"test/loss", f"test/{model.task.headline[0]}"}
    others = (f"{key.removeprefix('test/')} {value:.4f}" for key, value in metrics.items() if key not in shown)
    summary = "   ".join([headline(metrics, "test", model.task), *others]) + f"\ncheckpoint     {checkpoint}"
    return metrics, checkpoint, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="experiments evaluate", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("path", type=Path, help="a run directory (its best checkpoint) or a .ckpt file")
    parser.add_argument("overrides", nargs="*", help="changes to the run's config: key=value, or group=option")
    args = parser.parse_args(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's errors reach `describe` whole
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the figures below, not Lightning's setup lines
    try:
        summary = evaluate(args.path, args.overrides)[2]
    except (Exception, KeyboardInterrupt) as error:
        exit_for(error)
    print(summary)
