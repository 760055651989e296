"""The one LightningModule: any net from `nets/`, cross-entropy, accuracy and macro-F1, optimiser and schedule.

Its hyperparameters are plain values (dicts, lists, numbers, strings), so checkpoints load with
torch's default `weights_only=True`, and `Classifier.load_from_checkpoint(path)` rebuilds the net.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from experiments.models.nets import build_net
from experiments.models.optim import build_optimizer, build_scheduler


class Classifier(L.LightningModule):
    def __init__(
        self,
        spec: dict,
        net: dict,
        optimizer: dict,
        scheduler: dict,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(net, spec)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        num_classes = spec["num_classes"]
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        # One copy per stage: each accumulates on the device and is read once, at the epoch's end.
        self.train_metrics = metrics.clone(prefix="train/")
        self.train_metrics.persistent(True)  # in checkpoints: an epoch resumed midway still counts all its batches
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        # A net may set something from the training data before the first step (the naive-Bayes feature
        # weights of the text bag). It depends on the data alone, so a resumed run recomputes the same.
        fit_to_training_data = getattr(self.net, "fit_to_training_data", None)
        if fit_to_training_data is not None:
            fit_to_training_data(*self.trainer.datamodule.splits["train"])

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits, y)
        # The progress bar shows epoch values only: Lightning turns every progress-bar value into a Python
        # number after each batch, which on a GPU would wait for the step to finish.
        training = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=not training, batch_size=len(y))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=not training)
        return loss

    def on_train_epoch_start(self) -> None:  # (not called when a run resumes in the middle of an epoch)
        self.train_metrics.reset()  # a run resumed from an epoch-end checkpoint restored that finished epoch's counts

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).softmax(dim=1)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.net, self.hparams.optimizer)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, self.trainer.estimated_stepping_batches)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
