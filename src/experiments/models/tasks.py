"""What a model learns from its data's labels: a task owns the loss, the epoch metrics and what a prediction is.

    classification   a class per example: cross-entropy, accuracy and macro-F1, class probabilities
    regression       a number per example: MSE, MAE or Huber loss; RMSE, MAE and R²; the predicted value

The data says which (`spec["task"]`, classification unless a data module says otherwise, as a table with
`data.task=regression` does), and the root config's `tasks` node names each task's class and settings, with the
objective a run selects on by default. The LightningModule (models/model.py) is the same for every task: a new
task (multi-label, say) is a class here, or in a user's own package, and an entry of `tasks`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from experiments.core.errors import UserError
from experiments.core.rules import number, one_of, require

CLASSIFICATION, REGRESSION = "classification", "regression"


def task_of(spec: dict) -> str:
    """The task the data's labels ask for: what its spec says, classification for data that says nothing."""
    return spec.get("task", CLASSIFICATION)


class Task:
    """The part of training that depends on what the labels are. `metrics` are logged as `<stage>/<name>` after
    each epoch, beside `<stage>/loss`, each with the direction that is better; `headline` is the one the console
    summary shows first."""

    name: str
    metrics: dict[str, str]  # name -> "max" or "min"
    headline: tuple[str, str]  # (metric, how the console names it)

    def prepare(self, spec: dict) -> None:
        """Take what the task needs of the data's description (`spec`), before the net is built."""

    def outputs(self, spec: dict) -> int:
        """The width of the net's last layer."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def kept(self, outputs: torch.Tensor) -> torch.Tensor:
        """What an epoch's metrics need of each example's outputs (a class id, a value), kept on the device."""
        raise NotImplementedError

    def epoch_metrics(self, spec: dict) -> dict[str, Metric]:
        """torchmetrics counting `kept` against the targets, one per name of `metrics`."""
        raise NotImplementedError

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """What `predict` writes for each example."""
        raise NotImplementedError


class Classification(Task):
    name = CLASSIFICATION
    metrics = {"acc": "max", "f1": "max"}
    headline = ("acc", "accuracy")

    def __init__(self, label_smoothing: float = 0.0) -> None:
        require("", label_smoothing=(label_smoothing, number(0.0, 1.0)))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def outputs(self, spec: dict) -> int:
        return spec["num_classes"]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(outputs, targets)

    def kept(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)

    def epoch_metrics(self, spec: dict) -> dict[str, Metric]:
        # No argument checks: they would read the predictions back to the host. torchmetrics' macro average
        # (since 1.0) leaves out a class absent from both targets and predictions (an F1 of 0/0) and counts one
        # predicted but never true, or true but never predicted, as 0, as scikit-learn's
        # `f1_score(average="macro")` does.
        n = spec["num_classes"]
        return {
            "acc": MulticlassAccuracy(n, average="micro", validate_args=False),
            "f1": MulticlassF1Score(n, average="macro", validate_args=False),
        }

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(dim=1)


LOSSES = {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}


class Regression(Task):
    """One number per example. The net learns it standardised by the training labels' mean and standard
    deviation (`spec["target_mean"]`, `["target_std"]`), so that its last layer starts at the right scale
    whatever the unit; losses are taken there (a Huber loss's threshold is in standard deviations), metrics
    and predictions in the labels' own unit."""

    name = REGRESSION
    metrics = {"rmse": "min", "mae": "min", "r2": "max"}
    headline = ("rmse", "RMSE")

    def __init__(self, loss: str = "mse") -> None:
        require("tasks.regression", loss=(loss, one_of(*LOSSES)))
        self.criterion = LOSSES[loss]()
        self.mean, self.std = 0.0, 1.0

    def prepare(self, spec: dict) -> None:
        self.mean, self.std = spec.get("target_mean", 0.0), spec.get("target_std", 1.0)

    def outputs(self, spec: dict) -> int:
        return 1

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(outputs.squeeze(1), (targets - self.mean) / self.std)

    def kept(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.predictions(outputs).detach()

    def epoch_metrics(self, spec: dict) -> dict[str, Metric]:
        return {"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError(), "r2": R2Score()}

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(1).float() * self.std + self.mean


def check_task_settings(task: Task, label_smoothing: float) -> None:
    """Settings that only mean something for another task: one line, not a silent no-op."""
    if label_smoothing and not isinstance(task, Classification):
        raise UserError(f"label_smoothing={label_smoothing} smooths class labels: {task.name} has none; leave it at 0")
