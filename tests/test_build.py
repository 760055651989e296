"""One way to build what a config names by `_target_` (core/build.py): each group's mistakes in one line naming
the group, nested nodes and `_partial_`, a run's optimiser and schedule built once, the objective checked at start,
and a run folder written before this layout still loading, evaluating and predicting."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn

from experiments.core.build import build, component
from experiments.core.errors import UserError, classify
from experiments.core.rules import checks, number
from experiments.models.model import objectives
from experiments.models.optim import build_optimizer, build_scheduler, check_optimizer, check_scheduler
from experiments.models.tasks import Classification
from tests.conftest import run_cli

DIGITS = "experiments.data.DigitsDataModule"
BEFORE_THE_LAYOUT = Path(__file__).parent / "files" / "run_before_the_layout"

# (config, group, kind, arguments given later, the line)
MISTAKES = {
    "a target that does not import": (
        {"_target_": "no_such_package.Data"},
        "data",
        L.LightningDataModule,
        (),
        "data._target_='no_such_package.Data' cannot be imported: no module named 'no_such_package'",
    ),
    "an attribute its module lacks": (
        {"_target_": "torch.nn.Linearr"},
        "model",
        nn.Module,
        (),
        "model._target_='torch.nn.Linearr' cannot be imported: module 'torch.nn' has no 'Linearr'",
    ),
    "a data module that is not one": (
        {"_target_": "torch.nn.Linear"},
        "data",
        L.LightningDataModule,
        (),
        "data._target_='torch.nn.Linear' is not a lightning.pytorch.core.datamodule.LightningDataModule class",
    ),
    "a callback that is not one": (
        {"_target_": "torch.nn.Linear"},
        "callbacks.mine",
        L.Callback,
        (),
        "callbacks.mine._target_='torch.nn.Linear' is not a lightning.pytorch.callbacks.callback.Callback class",
    ),
    "a logger that is not one": (
        {"_target_": DIGITS},
        "logger.mine",
        Logger,
        (),
        f"logger.mine._target_='{DIGITS}' is not a lightning.pytorch.loggers.logger.Logger class",
    ),
    "a net that is not one": (
        {"_target_": "torch.optim.SGD"},
        "model",
        nn.Module,
        (),
        "model._target_='torch.optim.SGD' is not a torch.nn.modules.module.Module class",
    ),
    "an optimiser that is not one": (
        {"_target_": "torch.nn.Linear"},
        "optimizer",
        torch.optim.Optimizer,
        (),
        "optimizer._target_='torch.nn.Linear' is not a torch.optim.optimizer.Optimizer class",
    ),
    "a schedule that cannot be called": (
        {"_target_": "math.pi"},
        "scheduler",
        object,
        (),
        "scheduler._target_='math.pi' is not a class or a function",
    ),
    "a function that builds something of another kind": (
        {"_target_": "tests.test_build.pair", "first": 1},
        "logger.mine",
        Logger,
        (),
        "logger.mine: pair returned a builtins.tuple, not a lightning.pytorch.loggers.logger.Logger",
    ),
    "an argument it does not take": (
        {"_target_": DIGITS, "batch_sise": 8},
        "data",
        L.LightningDataModule,
        (),
        "data: DigitsDataModule got an unexpected keyword argument 'batch_sise'; `--cfg job` shows its settings",
    ),
    "a required argument missing": (
        {"_target_": "torch.optim.lr_scheduler.StepLR"},
        "scheduler",
        object,
        (None,),
        "scheduler: StepLR missing a required argument: 'step_size'; `--cfg job` shows its settings",
    ),
    "a Trainer's argument it does not take": (
        {"_target_": "lightning.Trainer", "max_epoch": 1},
        "trainer",
        L.Trainer,
        (),
        "trainer: Trainer got an unexpected keyword argument 'max_epoch'",
    ),
    "a value the component's own rule refuses": (
        {"_target_": "experiments.run.recovery.LastCheckpoint", "dirpath": "unused", "every_n_epochs": 0},
        "callbacks.last_checkpoint",
        L.Callback,
        (),
        "callbacks.last_checkpoint.every_n_epochs=0 is not allowed: it must be an integer >= 1",
    ),
    "a value its constructor refuses": (  # Lightning's ValueError: the user's to change, not a bug
        {"_target_": "lightning.Trainer", "accelerator": "abacus", "logger": False},
        "trainer",
        L.Trainer,
        (),
        "You selected an invalid accelerator name: `accelerator='abacus'`.",
    ),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_each_mistake_is_one_line_that_names_the_group_and_exits_2(case):
    config, group, kind, later, line = MISTAKES[case]
    with pytest.raises(UserError) as error:
        build(config, group, kind, *later)
    failure = classify(error.value)
    assert failure.line.startswith(line) and "\n" not in failure.line, failure.line
    assert failure.exit_code == 2 and not failure.traceback


def pair(first, second=None) -> tuple:
    return first, second


def test_nested_targets_are_built_first_and_a_partial_waits_for_its_other_arguments():
    linear = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3}
    built = build({"_target_": "tests.test_build.pair", "first": linear, "second": [{"x": linear}]}, "mine")
    assert isinstance(built[0], nn.Linear) and isinstance(built[1][0]["x"], nn.Linear)
    assert built[0] is not built[1][0]["x"]
    waiting = build({"_target_": "tests.test_build.pair", "first": {**linear, "_partial_": True}}, "mine")[0]
    assert isinstance(waiting, functools.partial) and waiting(out_features=5).out_features == 5
    # A nested node's mistakes name where it is, and are found without building anything.
    late = component({"_target_": "tests.test_build.pair", "first": {**linear, "in_feature": 2}}, "mine")
    with pytest.raises(UserError, match=r"^mine\.first: Linear got an unexpected keyword argument 'in_feature'"):
        late.check()
    with pytest.raises(UserError, match=r"^mine\.second\[0\]\._target_='nope\.X' cannot be imported"):
        component({"_target_": "tests.test_build.pair", "first": 1, "second": [{"_target_": "nope.X"}]}, "mine")


class CountingSGD(torch.optim.SGD):
    built = 0

    def __init__(self, *args, **kwargs) -> None:
        CountingSGD.built += 1
        super().__init__(*args, **kwargs)


class CountingStepLR(torch.optim.lr_scheduler.StepLR):
    built = 0

    def __init__(self, *args, **kwargs) -> None:
        CountingStepLR.built += 1
        super().__init__(*args, **kwargs)


class LoggedMetrics(L.Callback):
    """Keeps the names of what the run logged by the end of its fit."""

    names: set[str] = set()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        LoggedMetrics.names = set(trainer.callback_metrics)


def test_a_run_builds_its_optimiser_and_its_schedule_once(make_config, monkeypatch):
    from experiments.run.task import train

    monkeypatch.setattr(CountingSGD, "built", 0)
    monkeypatch.setattr(CountingStepLR, "built", 0)
    cfg = make_config(
        "model=mlp",
        "model.width=16",
        "optimizer=sgd",
        "optimizer._target_=tests.test_build.CountingSGD",
        "scheduler=constant",
        "+scheduler._target_=tests.test_build.CountingStepLR",
        "+scheduler.step_size=5",
        "+callbacks.logged._target_=tests.test_build.LoggedMetrics",
        "trainer.max_epochs=2",
        "logger=none",
        "trainer.accelerator=cpu",
    )
    train(cfg)  # fits, then tests the best checkpoint
    assert (CountingSGD.built, CountingStepLR.built) == (1, 1)
    # What an objective may name is what the module logged while it fitted: no more, no less. (Throughput's figure,
    # logged after each epoch's validation, is no metric a checkpoint could select on at that validation.)
    module_logged = {name for name in LoggedMetrics.names if name.startswith(("train/", "val/"))}
    assert module_logged - {"train/samples_per_s"} == set(objectives(Classification()))


@checks("scheduler", factor=number(0.0, 1.0, low_inclusive=False))
def counting_schedule(optimizer, total_steps: int, factor: float = 0.5):
    counting_schedule.calls += 1
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor ** (step / total_steps))


counting_schedule.calls = 0


def test_a_schedule_is_checked_at_start_without_being_built(monkeypatch):
    """A run writes its first files before Lightning asks for the schedule: what the schedule declares of its
    arguments is checked at start, with nothing built."""
    monkeypatch.setattr(counting_schedule, "calls", 0)
    config = {"_target_": "tests.test_build.counting_schedule", "factor": 2}
    with pytest.raises(UserError, match=r"^scheduler\.factor=2 is not allowed: it must be a number > 0\.0 and < 1"):
        check_scheduler(config)
    check_scheduler({**config, "factor": 0.5, "interval": "epoch"})  # Lightning's keys are no arguments of it
    assert counting_schedule.calls == 0
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError, match=r"^scheduler\.factor=2 is not allowed"):  # nor when it is called
        counting_schedule(optimizer, 10, factor=2)
    built = build_scheduler(optimizer, {**config, "factor": 0.5, "interval": "epoch"}, total_steps=10)
    assert built["interval"] == "epoch" and counting_schedule.calls == 1


def test_an_objective_the_module_does_not_log_is_refused_in_process(make_config):
    from experiments.run.task import build_model

    with pytest.raises(UserError, match=r"^objective='val/accc' is not allowed: it must be one of val/loss, val/acc"):
        build_model(make_config("objective=val/accc"), {"kind": "image", "shape": [1, 8, 8], "num_classes": 10})


def test_a_metric_a_callback_says_it_logs_may_be_the_objective(make_config):
    import lightning as L

    from experiments.reporting.callbacks import Throughput, logged_by
    from experiments.run.task import build_model

    class AreaUnderCurve(L.Callback):
        logged_metrics = ("val/auc",)

    spec = {"kind": "image", "shape": [1, 8, 8], "num_classes": 10}
    callbacks = [AreaUnderCurve(), Throughput(), L.Callback()]
    assert logged_by(callbacks) == ["val/auc", "train/samples_per_s"]
    build_model(make_config("objective=val/auc"), spec, logged_by(callbacks))
    with pytest.raises(UserError, match=r"^objective=.val/auc. is not allowed: .* train/f1, train/samples_per_s$"):
        build_model(make_config("objective=val/auc"), spec, logged_by(callbacks[1:]))


@pytest.mark.slow  # the command line in a subprocess: the full tier
def test_an_objective_nothing_logs_is_one_line_at_start_with_nothing_left(tmp_path):
    result = run_cli("objective=val/accc", "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    choices = "val/loss, val/acc, val/f1, train/loss, train/acc, train/f1"
    assert line.startswith(f"error: objective='val/accc' is not allowed: it must be one of {choices}"), line
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no run folder, no logger's file


def test_a_run_written_before_this_layout_loads_evaluates_and_predicts(tmp_path, monkeypatch):
    from experiments.commands.evaluate import evaluate
    from experiments.commands.predict import predict
    from experiments.run.finished import load_model

    monkeypatch.chdir(tmp_path)
    checkpoint = BEFORE_THE_LAYOUT / "checkpoints" / "best-epoch001.ckpt"
    model = load_model(checkpoint)
    # Its optimiser and schedule settings carry `_partial_: true`: they build as they did.
    assert model.hparams.optimizer["_partial_"] is True and model.hparams.scheduler["_partial_"] is True
    assert check_optimizer(model.net, model.hparams.optimizer) == 2
    optimizer = build_optimizer(model.net, model.hparams.optimizer)
    assert type(optimizer).__name__ == "AdamW" and build_scheduler(optimizer, model.hparams.scheduler, 10)

    # Its config's data node still says `download: true`, which the digits no longer take.
    expected = json.loads((BEFORE_THE_LAYOUT / "metrics.json").read_text())["test"]
    result = evaluate(checkpoint, [])[0]
    assert result["test/acc"] == pytest.approx(expected["test/acc"], abs=1e-6)
    out = tmp_path / "predictions.csv"
    count = predict(checkpoint, [], out, [], split="test")
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert count == len(rows) == 270  # 15 % of the 1,797 digits
    assert sum(row["label"] == row["predicted"] for row in rows) / count == pytest.approx(expected["test/acc"], 1e-6)
