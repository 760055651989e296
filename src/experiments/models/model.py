"""The one LightningModule: any net from `nets/` learning the data's task (tasks.py), with its optimiser and schedule.

Its hyperparameters are plain values (dicts, lists, numbers, strings), so checkpoints load with
torch's default `weights_only=True`, and `Model.load_from_checkpoint(path)` rebuilds the net and the task.

A training step does the step and nothing else: its loss and what the task keeps of its outputs stay on the
device in a `Tally`, which torchmetrics counts once, at the epoch's end (no host-device sync per step). Every
`log_every_n_steps`-th step loss goes to the loggers then too, as `train/loss_step`.

`Model` is plain Lightning. `FastModel`, what runs train with by default (`fast_path: true`), takes the
optimiser step itself where Lightning's automatic optimisation is not needed: core/lightning_internals.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection

from experiments.core.build import build
from experiments.core.errors import UserError
from experiments.core.lightning_internals import FastPath, count_steps_in_both_modes
from experiments.core.rules import one_of
from experiments.data.contract import training_tensors
from experiments.models.graphs import GraphedTraining, graphed_training_for
from experiments.models.nets import build_net
from experiments.models.optim import build_optimizer, build_scheduler
from experiments.models.tasks import Task, task_of

# Lightning's two in-memory copies of the values logged so far, which a checkpoint keeps for a resumed run:
# what callbacks and metrics.json read, and what the live progress bar shows.
LOGGED = ("callback_metrics", "progress_bar_metrics")

# The task of checkpoints written before tasks: a classifier, its label smoothing a hyperparameter of its own.
CLASSIFIER = {"_target_": "experiments.models.tasks.Classification"}


def build_task(config: dict, spec: dict) -> Task:
    """The task a `tasks` entry names, for data described by `spec`, which must give the labels it learns."""
    task = build(config, "tasks", Task)
    if task.name != task_of(spec):
        raise UserError(f"the model learns {task.name}, but the data's labels are for {task_of(spec)}")
    task.prepare(spec)
    return task


def objectives(task: Task) -> tuple[str, ...]:
    """What a run may select on (checkpoints, early stopping, sweeps): what the module logs while it fits,
    validation and training metrics (the test comes after the fit)."""
    return tuple(f"{stage}/{metric}" for stage in ("val", "train") for metric in ("loss", *task.metrics))


def check_objective(objective: str, task: Task, also_logged: Iterable[str] = ()) -> None:
    """The run's objective is one the task logs, or a metric one of its callbacks says it logs (`also_logged`):
    one line at start, not an error after the first validation, when the run has written its first files."""
    allowed = one_of(*objectives(task), *also_logged)(objective)
    if allowed is not None:
        raise UserError(f"objective={objective!r} is not allowed: it must be {allowed}")


class Tally:
    """One stage's losses and what the task keeps of its outputs over an epoch, on their device; counted by the
    task's torchmetrics once, at the epoch's end, and summed over the processes by their synchronisation."""

    def __init__(self, metrics: dict[str, Metric]) -> None:
        # Different counts for each (micro and macro averages, squared and absolute errors): nothing to share.
        self.metrics = MetricCollection(metrics, compute_groups=False)
        # A NaN loss keeps the epoch's mean NaN, as a diverged run should show (torchmetrics would drop it).
        self.loss = MeanMetric(nan_strategy=float("nan"))
        self.reset()

    def to(self, device: torch.device) -> None:
        """Counts on `device`, where the steps leave their tensors (and where a resumed epoch's tally goes)."""
        self.metrics.to(device)
        self.loss.to(device)

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.predictions: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, kept: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        self.sizes.append(len(targets))
        self.predictions.append(kept)
        self.targets.append(targets)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What was tallied so far, as four tensors (for checkpoints taken in the middle of an epoch)."""
        if not self.sizes:
            return {}
        return {
            "losses": torch.stack(self.losses),
            "sizes": torch.tensor(self.sizes),
            "predictions": torch.cat(self.predictions),
            "targets": torch.cat(self.targets),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.reset()
        if state:
            # The checkpoint may have been written, or loaded, on another device than the one counting.
            device = self.loss.device
            self.losses, self.sizes = list(state["losses"].to(device)), state["sizes"].tolist()
            self.predictions, self.targets = [state["predictions"].to(device)], [state["targets"].to(device)]

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean loss (weighted by batch size) and the task's metrics, the same on every process."""
        targets = torch.cat(self.targets)
        self.metrics.update(torch.cat(self.predictions), targets)
        sizes = torch.tensor(self.sizes, dtype=torch.float32, device=targets.device)
        self.loss.update(torch.stack(self.losses), sizes)
        values = {"loss": self.loss.compute(), **self.metrics.compute()}
        # Zeroed outside an evaluation's inference mode, whose tensors nothing outside it may add to: the
        # same module evaluated by a Trainer with `inference_mode=False` would fail on its first epoch.
        with torch.inference_mode(False):
            self.metrics.reset()
            self.loss.reset()
        return values


def prepare_net(net: nn.Module, device: torch.device, compile: bool) -> None:
    """Channels-last convolutions on GPUs (tensor cores want them: no layout transposes), and
    torch.compile when asked, in place (`nn.Module.compile`): the state dict keeps its keys, so
    checkpoints still load into an uncompiled net."""
    if device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in net.modules()):
        net.to(memory_format=torch.channels_last)
    if compile:
        net.compile()


class Model(L.LightningModule):
    def __init__(
        self,
        spec: dict,
        net: dict,
        optimizer: dict,
        scheduler: dict,
        label_smoothing: float = 0.0,
        compile: bool = False,
        cuda_graphs: bool = False,
        task: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the loggers get the whole composed config (reporting/loggers/)
        # Before the net: a regression sets its labels' scale from the spec, and the net's last layer is its width.
        self.task = build_task(task or {**CLASSIFIER, "label_smoothing": label_smoothing}, spec)
        self.net = build_net(net, {**spec, "outputs": self.task.outputs(spec)})
        self.tallies = {stage: Tally(self.task.epoch_metrics(spec)) for stage in ("train", "val", "test")}
        self.step_losses: list[tuple[int, torch.Tensor]] = []  # (global step, loss) for the loggers
        self.graphed_training: GraphedTraining | None = None  # with cuda_graphs, during a fit on one GPU
        self.metrics_before_resume: dict[str, dict] = {}  # LOGGED's values from the checkpoint a run resumes from

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        prepare_net(self.net, device, compile=self.hparams.compile and stage == "fit")
        # Moved here, not registered as submodules: converting the module to half precision (`bf16-true`)
        # would convert them too, and sum the epoch's losses in it.
        for tally in self.tallies.values():
            tally.to(device)
        graphs = self.hparams.cuda_graphs and stage == "fit"
        self.graphed_training = graphed_training_for(self.net, self.trainer) if graphs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.graphed_training is not None:
            return self.graphed_training(x)
        return self.net(x)

    def on_train_end(self) -> None:
        self.graphed_training = None  # its graphs hold their own memory; the test runs eagerly

    def on_fit_start(self) -> None:
        # A net may set something from the training data before the first step (the naive-Bayes weights of
        # the text MLP); None where it has nothing to set. It depends on the data alone, so a resumed run
        # recomputes the same.
        fit_to_training_data = getattr(self.net, "fit_to_training_data", None)
        if fit_to_training_data is not None:
            fit_to_training_data(*training_tensors(self.trainer.datamodule))

    def _shared_step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        outputs = self(x)
        loss = self.task.loss(outputs, y)
        self.tallies[stage].add(self.task.kept(outputs.detach()), y, loss)
        return loss, outputs

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch, "train")
        if self.trainer.loggers and (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.step_losses.append((self.global_step, loss.detach()))
        return loss

    # Evaluation steps return the net's outputs for callbacks (the figures of reporting/dashboards.py).
    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")[1]

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")[1]

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.task.predictions(self(batch[0]))

    def on_train_epoch_start(self) -> None:  # (not called when a run resumes in the middle of an epoch)
        self.tallies["train"].reset()

    # A checkpoint taken in the middle of an epoch keeps that epoch's tally and the step losses not yet
    # logged, so a run resumed from it reports the epoch exactly as an uninterrupted run would. It keeps
    # the values logged so far too, which Lightning holds in memory only: a resumed run whose remaining
    # epochs do not validate still reports and shows the last validation, as an uninterrupted run does.
    # A model merely loaded from a checkpoint and fitted afresh takes none of it.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        steps = [step for step, _ in self.step_losses]
        losses = torch.stack([loss for _, loss in self.step_losses]) if steps else torch.empty(0)
        checkpoint["epoch_so_far"] = {"train": self.tallies["train"].state_dict(), "steps": steps, "losses": losses}
        metrics = self.trainer.callback_metrics  # Lightning's values are tensors; a callback may add a number
        checkpoint["callback_metrics"] = {k: torch.as_tensor(v).detach().cpu() for k, v in metrics.items()}
        checkpoint["progress_bar_metrics"] = dict(self.trainer.progress_bar_metrics)  # numbers already

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING:  # a resume, not a mere load
            so_far = checkpoint.get("epoch_so_far", {})
            self.tallies["train"].load_state_dict(so_far.get("train", {}))
            self.step_losses = list(zip(so_far.get("steps", []), so_far.get("losses", []), strict=True))
            self.metrics_before_resume = {name: checkpoint.get(name, {}) for name in LOGGED}
        count_steps_in_both_modes(checkpoint)

    # Put back when training starts, not on loading: Lightning clears its metrics after restoring the
    # checkpoint and after the sanity check. A resumed fit with nothing left to train never starts training:
    # then at its end (after the callbacks' on_fit_end, but before metrics.json is written).
    def on_train_start(self) -> None:
        self._restore_metrics()

    def on_fit_end(self) -> None:
        self._restore_metrics()

    def _restore_metrics(self) -> None:
        for name, values in self.metrics_before_resume.items():
            logged = getattr(self.trainer, name)
            for key, value in values.items():
                logged.setdefault(key, value)
        self.metrics_before_resume = {}

    def on_validation_epoch_start(self) -> None:
        self.tallies["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.tallies["test"].reset()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # At the epoch's last batch, so that callbacks (the progress line among them) read this epoch's values.
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._log_tally("train")

    def on_train_epoch_end(self) -> None:
        self._log_tally("train")  # an epoch cut short (max_steps, a stop signal); else already logged
        if self.step_losses and self.trainer.is_global_zero:
            steps, losses = zip(*self.step_losses, strict=True)
            for step, value in zip(steps, torch.stack(losses).tolist(), strict=True):
                for logger in self.loggers:
                    logger.log_metrics({"train/loss_step": value}, step=step)
        self.step_losses.clear()

    def on_validation_epoch_end(self) -> None:
        self._log_tally("val")

    def on_test_epoch_end(self) -> None:
        self._log_tally("test")

    def _log_tally(self, stage: str) -> None:
        tally = self.tallies[stage]
        if not tally.sizes:  # no batches this epoch (e.g. limit_val_batches=0)
            return
        metrics = tally.compute()
        # The values are already the same on every process; sync_dist's one small all-reduce per epoch
        # keeps Lightning's bookkeeping (and its warning) quiet. Validation values show on the progress bar.
        values = {f"{stage}/{name}": value for name, value in metrics.items()}
        self.log_dict(values, on_step=False, on_epoch=True, prog_bar=stage == "val", sync_dist=True)
        tally.reset()

    def configure_optimizers(self):
        # The one place the optimiser and its schedule are built (a run checks their settings at start, without
        # building them: run/task.py). Lightning refuses to clip gradients under mixed precision for an optimiser
        # that could unscale them inside its own step, as fused ones can: with clipping, the multi-tensor kernels.
        clipping = bool(self.trainer.gradient_clip_val) and isinstance(self.trainer.precision_plugin, MixedPrecision)
        optimizer = build_optimizer(self.net, self.hparams.optimizer, fused=not clipping)
        schedule = build_scheduler(optimizer, self.hparams.scheduler, self.trainer.estimated_stepping_batches)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}


class FastModel(FastPath, Model):
    """The Model on the fast path (`fast_path: true`): the same training, with less of Lightning's bookkeeping
    per step. Its checkpoints are the Model's: either loads them."""
