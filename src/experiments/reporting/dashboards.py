"""Dashboards beyond the curves: the HParams table of a run, and the figures of its evaluations.

The curves (loss, the task's metrics, learning rate, samples/s) are logged where they arise; this
callback adds what a user looks at to judge a run or compare a sweep's runs:
- after each validation and after the test, the figures of the task: for classes, a confusion-matrix image and
  the misclassified examples (a grid of images with their true and predicted labels, or a table of reviews for
  text); for numbers, the predicted values against the true ones and a histogram of the residuals;
- at the end, the run's hyperparameters with its final metrics in TensorBoard's HParams dashboard, so the
  runs of a sweep line up in one table (`tensorboard --logdir <sweep dir>`, HPARAMS tab).
Each figure is drawn once and handed to every logger that takes figures (`add_figure`, `add_table`): TensorBoard,
MLflow (as PNG files of the run) and W&B (as images and tables); see reporting/loggers/.

Costs nothing per training step: validation and test steps hand over their outputs, and the confusion
matrix is counted on the device (torchmetrics), once per drawn evaluation, when the host reads it.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from experiments.core.run_dir import final_objective
from experiments.data.contract import class_names
from experiments.models.tasks import Classification, Regression
from experiments.reporting.loggers.base import figure_loggers, run_loggers

KEPT = 512  # examples per evaluation kept to pick misclassified ones from (the first batches')
SHOWN = 16  # misclassified examples shown


class Dashboards(L.Callback):
    def __init__(
        self,
        objective: str = "val/acc",
        test: bool = True,
        images_every_n_epochs: int = 10,
        tags: list[str] | None = None,
        notes: str | None = None,
    ) -> None:
        self.objective = objective
        self.tags, self.notes = list(tags or []), notes or ""
        # Drawing takes a few tenths of a second: on every epoch it would double a short run's time.
        self.images_every_n_epochs = images_every_n_epochs
        self.test = test  # the HParams entry is written after the test when there is one, else after fit
        self._drawn: Classification | Regression | None = None  # the task of an evaluation being drawn
        self._confusion: MulticlassConfusionMatrix | None = None
        self._labels: list[tuple[torch.Tensor, torch.Tensor]] = []  # (predicted, true) per batch
        self._kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._final: dict[str, float] = {}

    # Counting, on the device, during the validations that will be drawn and the test.
    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, draws: bool) -> None:
        self._drawn, self._confusion, self._labels, self._kept = None, None, [], []  # nobody draws: not counted
        task = getattr(pl_module, "task", None)
        if draws and figure_loggers(trainer.loggers) and isinstance(task, Classification | Regression):
            self._drawn = task  # (a task of a user's own has no figures here)
        if isinstance(self._drawn, Classification):
            # Without argument checks, which would read the labels back to the host. Only the first process
            # draws, from its own batches: a synchronisation would wait for the others, which never compute.
            n = pl_module.hparams.spec["num_classes"]
            confusion = MulticlassConfusionMatrix(n, validate_args=False, sync_on_compute=False)
            self._confusion = confusion.to(pl_module.device)

    def _draws_validation(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = epoch == trainer.max_epochs
        return not trainer.sanity_checking and (last or epoch % self.images_every_n_epochs == 0)

    def _count(self, outputs, batch) -> None:
        if outputs is None or self._drawn is None:
            return
        x, y = batch
        # Counted once, when drawn: torchmetrics counts with bincount, whose CUDA kernel reads the labels'
        # range back to the host at every call.
        self._labels.append((self._drawn.kept(outputs.detach()), y))
        if self._confusion is not None and sum(len(k[1]) for k in self._kept) < KEPT:
            self._kept.append((x.detach(), y, outputs.detach().softmax(dim=1)))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module, draws=self._draws_validation(trainer))

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module, draws=True)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, "val")  # only if this validation was counted

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, "test")

    # Drawing, once per evaluation.
    def _draw(self, trainer: L.Trainer, stage: str) -> None:
        destinations = figure_loggers(trainer.loggers)
        if not destinations or self._drawn is None or not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self._confusion is None:  # a regression: numbers, not classes
            if not self._labels:
                return
            predicted, true = (torch.cat(parts).float().cpu() for parts in zip(*self._labels, strict=True))
            self._hand_over(destinations, regression_figures(predicted, true, stage), {}, step)
            return
        names = class_names(trainer.datamodule, self._confusion.num_classes)
        if self._labels:
            self._confusion.update(*(torch.cat(parts) for parts in zip(*self._labels, strict=True)))
        confusion = self._confusion.compute().cpu()
        figures = {f"{stage}/confusion_matrix": confusion_figure(confusion, names)}
        tables = {}
        if self._kept:
            x, y, probabilities = (torch.cat(parts).cpu() for parts in zip(*self._kept, strict=True))
            wrong = (probabilities.argmax(dim=1) != y).nonzero().flatten()[:SHOWN]
            x, y, probabilities = x[wrong], y[wrong], probabilities[wrong]
            if len(wrong) and x.dtype.is_floating_point and x.dim() == 4:  # images
                figures[f"{stage}/misclassified"] = examples_figure(x, y, probabilities, names)
            elif len(wrong) and hasattr(trainer.datamodule, "vocabulary"):  # token ids: a table of the reviews
                tables[f"{stage}/misclassified"] = reviews_table(x, y, probabilities, names, trainer.datamodule)
        self._hand_over(destinations, figures, tables, step)

    @staticmethod
    def _hand_over(destinations: list, figures: dict, tables: dict, step: int) -> None:
        for logger in destinations:
            for tag, figure in figures.items():
                logger.add_figure(tag, figure, step)
            for tag, (columns, rows) in tables.items():
                logger.add_table(tag, columns, rows, step)
        for figure in figures.values():
            _pyplot().close(figure)

    # The HParams entry, with the final metrics: at the fit's teardown, after every on_fit_end, the module's
    # too, which puts back the validation a resumed run with nothing left to train did not repeat.
    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self._final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_score if checkpoint is not None else None
        objective = final_objective(self._final, best, self.objective)  # as metrics.json and sweepers see it
        if not math.isnan(objective):
            self._final[self.objective] = objective
        if not self.test:
            self._log_hparams(trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self._final.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        self._log_hparams(trainer, pl_module)

    def _log_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        hparams = {**run_hparams(trainer, pl_module), "tags": ",".join(self.tags), "notes": self.notes}
        for logger in run_loggers(trainer.loggers):
            logger.log_final(hparams, self._final)


def run_hparams(trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
    """What tells a sweep's runs apart, as flat scalar values: data, model, optimiser, schedule, epochs."""
    hparams = {"data": type(trainer.datamodule).__name__.removesuffix("DataModule").lower()}
    hparams["data.batch_size"] = getattr(trainer.datamodule, "batch_size", None)
    for group in ("net", "optimizer", "scheduler"):
        prefix = "model" if group == "net" else group
        for key, value in pl_module.hparams[group].items():
            # `model`, the class's name, not `model._target_`: TensorBoard sorts the columns by name and shows
            # the first ones.
            if key == "_target_":
                hparams[prefix] = value.rsplit(".", 1)[-1]
            elif key != "_partial_":  # (in the configs of runs written before it was dropped)
                hparams[f"{prefix}.{key}"] = value
    task = pl_module.hparams.get("task") or {"label_smoothing": pl_module.hparams.label_smoothing}
    hparams["task"] = pl_module.task.name
    hparams.update({f"task.{key}": value for key, value in task.items() if key != "_target_"})
    hparams["trainer.max_epochs"] = trainer.max_epochs
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # images for TensorBoard, no display
    import matplotlib.pyplot as plt

    return plt


def regression_figures(predicted: torch.Tensor, true: torch.Tensor, stage: str) -> dict:
    """A regression's evaluation: the predicted values against the true ones (on the diagonal when right), and
    the histogram of the residuals (predicted - true)."""
    plt = _pyplot()
    scatter, axes = plt.subplots(figsize=(4.2, 4), layout="constrained")
    axes.scatter(true.numpy(), predicted.numpy(), s=8, alpha=0.6)
    low, high = float(torch.minimum(true.min(), predicted.min())), float(torch.maximum(true.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linewidth=1)
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    residuals, axes = plt.subplots(figsize=(4.2, 3), layout="constrained")
    axes.hist((predicted - true).numpy(), bins=30)
    axes.axvline(0, color="grey", linewidth=1)
    axes.set_xlabel("residual (predicted - true)")
    axes.set_ylabel("examples")
    return {f"{stage}/predicted_vs_true": scatter, f"{stage}/residuals": residuals}


def confusion_figure(confusion: torch.Tensor, names: list[str]):
    plt = _pyplot()
    n = len(names)
    figure, axes = plt.subplots(figsize=(1.5 + 0.45 * n, 1.2 + 0.45 * n), layout="constrained")
    rates = confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)  # each true class's row sums to 1
    axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                colour = "white" if rates[i, j] > 0.5 else "black"
                axes.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7, color=colour)
    axes.set_xticks(range(n), names, rotation=90 if n > 2 else 0, fontsize=8)
    axes.set_yticks(range(n), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return figure


def examples_figure(x: torch.Tensor, y: torch.Tensor, probabilities: torch.Tensor, names: list[str]):
    """The examples as one image of tiles, each under its label: one set of axes, where one per example took
    four times as long to draw (16 digits: 0.28 s against 0.07 s on a 2-core Xeon)."""
    plt = _pyplot()
    columns = 8
    rows = (len(x) + columns - 1) // columns
    channels, height, width = x.shape[1:]
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low).clamp(min=1e-6)  # the batch was normalised: each image stretched back to 0..1
    band, gap = height // 2, max(width // 8, 1)  # room for two lines of label above each image, and between
    tiles = torch.ones(rows, columns, channels, band + height, width + gap)  # white around the images
    figure = plt.figure(figsize=(columns * 1.2, rows * 1.4 + 0.3))
    axes = figure.add_axes((0.01, 0.02, 0.98, 0.96 - 0.3 / (rows * 1.4 + 0.3)))  # below the title
    axes.axis("off")
    for k, (image, label, p) in enumerate(zip(x, y, probabilities, strict=True)):
        row, column = divmod(k, columns)
        tiles[row, column, :, band:, :width] = image
        predicted = int(p.argmax())
        # The predicted class on a line of its own: two long names side by side overran the tile's width.
        text = f"{names[label]}\n→{names[predicted]} {p[predicted]:.2f}"
        centre, bottom = column * (width + gap) + width / 2, row * (band + height) + band - 0.5
        axes.text(centre, bottom, text, ha="center", va="bottom", fontsize=7, linespacing=1.1)
    grid = tiles.permute(0, 3, 1, 4, 2).reshape(rows * (band + height), columns * (width + gap), channels)
    axes.imshow(grid.squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    figure.suptitle("misclassified: true, →predicted (probability)", fontsize=9)
    return figure


def reviews_table(x: torch.Tensor, y: torch.Tensor, probabilities: torch.Tensor, names: list[str], data):
    """(columns, rows) of a table of the first words of each misclassified review."""
    vocabulary, pad = data.vocabulary, data.spec["pad_index"]
    rows = []
    for ids, label, p in zip(x.tolist(), y.tolist(), probabilities, strict=True):
        words = [vocabulary[i] if i < len(vocabulary) else "<unk>" for i in ids if i != pad][:60]
        predicted = int(p.argmax())
        rows.append([names[label], names[predicted], round(float(p[predicted]), 2), " ".join(words)])
    return ["true", "predicted", "probability", "review (first 60 words)"], rows
