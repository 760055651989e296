"""Test a trained model again, or write its predictions: the run's own config, data and checkpoint.

    python -m experiments.evaluate outputs/train/runs/<run>                   # its best checkpoint
    python -m experiments.evaluate outputs/train/runs/<run>/checkpoints/last.ckpt
    python -m experiments.evaluate <run> --predict predictions.csv            # and per-example predictions
    python -m experiments.evaluate <run> data.data_dir=/elsewhere/data        # config overrides, key=value

The run's composed config (`.hydra/config.yaml`) rebuilds its data module with the same split; the
checkpoint is read with `torch.load(weights_only=True)` (it holds plain values only) and the net is
rebuilt from the hyperparameters inside it. The predictions CSV has one row per test example: its
index in the test split, the true label, the predicted one and the probability of every class.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.atomic import written_atomically
from experiments.errors import PATH_ERRORS, UserError, exit_for
from experiments.runs import RunDir


def find_run(path: Path) -> tuple[RunDir, Path]:
    """A run directory or a checkpoint -> (its run, the checkpoint): a directory means its best checkpoint."""
    run = RunDir.of(path)
    if path.is_file():
        return run, path
    checkpoint = run.best_checkpoint() or run.last_checkpoint()
    if not checkpoint.is_file():
        raise UserError(f"{path} holds no checkpoint ({checkpoint} is missing); pass a .ckpt file")
    return run, checkpoint


def load(run: RunDir, checkpoint: Path, overrides: list[str]):
    """The run's data module and its model from the checkpoint, as they were trained."""
    from hydra.utils import instantiate

    from experiments.models.classifier import Classifier
    from experiments.recovery import load_checkpoint

    cfg: DictConfig = OmegaConf.merge(run.config(), OmegaConf.from_dotlist(overrides))
    datamodule = instantiate(cfg.data)
    state = load_checkpoint(checkpoint, map_location="cpu")  # plain values only; a bad file is one line
    model = Classifier(**state["hyper_parameters"])
    model.load_state_dict(state["state_dict"])
    return cfg, datamodule, model


def evaluate(path: Path, overrides: list[str], predictions: Path | None = None) -> dict[str, float]:
    import lightning as L

    from experiments.trainer import pick_precision, quiet_lightning

    class KeepLogits(L.Callback):
        """The test pass's logits (what `test_step` returns): the predictions, without a second pass."""

        def __init__(self) -> None:
            self.logits = []

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            self.logits.append(outputs.detach())  # on the device: one copy to the host at the end

    run, checkpoint = find_run(path)
    cfg, datamodule, model = load(run, checkpoint, overrides)
    quiet_lightning()
    kept = KeepLogits()
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=pick_precision(cfg.trainer),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[kept] if predictions is not None else None,
    )
    metrics = {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}
    if predictions is not None:
        import torch

        probabilities = torch.cat(kept.logits).float().softmax(dim=1).cpu()
        labels = datamodule.splits["test"][1].tolist()
        predicted = probabilities.argmax(dim=1).tolist()
        try:  # a path of the user's: whatever stops the write is theirs to change (a file where a folder
            # should be, no permission, a full disk)
            predictions.parent.mkdir(parents=True, exist_ok=True)
            with written_atomically(predictions) as temporary, open(temporary, "w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["id", "label", "predicted", *(f"p{c}" for c in range(probabilities.shape[1]))])
                for i, (label, guess, p) in enumerate(zip(labels, predicted, probabilities.tolist(), strict=True)):
                    writer.writerow([i, label, guess, *(f"{value:.6f}" for value in p)])
        except OSError as error:
            if error.errno not in PATH_ERRORS:
                raise
            reason = error.strerror or str(error)
            raise UserError(
                f"cannot write the predictions to {predictions}: {reason}; give --predict another path"
            ) from error
    return {"checkpoint": str(checkpoint), **metrics}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument("path", type=Path, help="a run directory (its best checkpoint) or a .ckpt file")
    parser.add_argument("overrides", nargs="*", help="changes to the run's config, key=value")
    parser.add_argument("--predict", type=Path, metavar="CSV", help="also write per-example test predictions here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the figures below, not Lightning's setup lines
    try:
        result = evaluate(args.path, args.overrides, args.predict)
    except (Exception, KeyboardInterrupt) as error:
        exit_for(error)
    print(f"test accuracy  {result['test/acc']:.4f}   test loss {result['test/loss']:.4f}   f1 {result['test/f1']:.4f}")
    print(f"checkpoint     {result['checkpoint']}")
    if args.predict:
        print(f"predictions    {args.predict.resolve()}")


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.exit(main())
