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


def evaluate(path: Path, overrides: list[str]) -> dict[str, float]:
    from experiments.run.finished import evaluation_trainer, load

    cfg, datamodule, model, checkpoint = load(path, overrides)
    results = evaluation_trainer(cfg).test(model, datamodule=datamodule, verbose=False)
    return {"checkpoint": str(checkpoint), **{k: float(v) for k, v in results[0].items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="experiments evaluate", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("path", type=Path, help="a run directory (its best checkpoint) or a .ckpt file")
    parser.add_argument("overrides", nargs="*", help="changes to the run's config: key=value, or group=option")
    args = parser.parse_args(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's errors reach `describe` whole
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the figures below, not Lightning's setup lines
    try:
        result = evaluate(args.path, args.overrides)
    except (Exception, KeyboardInterrupt) as error:
        exit_for(error)
    print(f"test accuracy  {result['test/acc']:.4f}   test loss {result['test/loss']:.4f}   f1 {result['test/f1']:.4f}")
    print(f"checkpoint     {result['checkpoint']}")
