"""What lightning_internals.py relies on, checked against the installed Lightning, one test per touch point.

A Lightning release that renames or changes one fails here, by name. Each test runs a real (small) fit and
watches Lightning do the thing relied on, rather than only checking that a name exists.
"""

from __future__ import annotations

import inspect
import warnings
from datetime import timedelta

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from experiments.core import lightning_internals as internals
from experiments.data import DigitsDataModule
from experiments.models.model import FastModel, Model
from experiments.run.recovery import load_checkpoint

NET = {"_target_": "experiments.models.nets.MLP", "width": 32, "depth": 1, "dropout": 0.1}
ADAMW = {"_target_": "experiments.models.optim.AdamW", "lr": 0.01, "weight_decay": 0.01}
ONECYCLE = {"_target_": "experiments.models.optim.one_cycle", "pct_start": 0.3}


def fit_digits(module_class: type[Model] = FastModel, **trainer_options) -> tuple[Model, L.Trainer]:
    """A seeded run on the digits, one epoch unless told otherwise, with no logger, checkpoints or bar."""
    L.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=64)
    model = module_class(data.spec, NET, ADAMW, ONECYCLE)
    options = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, **trainer_options}
    trainer = L.Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **options)
    trainer.fit(model, datamodule=data)
    return model, trainer


# --- The fast path ---------------------------------------------------------------------------------------


def test_the_fast_path_trains_exactly_as_plain_lightning():
    fast, fast_trainer = fit_digits(FastModel)
    plain, plain_trainer = fit_digits(Model)
    assert not fast.automatic_optimization and plain.automatic_optimization
    assert fast_trainer.global_step == plain_trainer.global_step == fast_trainer.num_training_batches
    for a, b in zip(fast.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fast_trainer.optimizers[0].param_groups[0]["lr"] == plain_trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.parametrize("option", [{"gradient_clip_val": 0.5}, {"accumulate_grad_batches": 2}])
def test_clipping_and_accumulation_are_left_to_lightning(option):
    model, trainer = fit_digits(FastModel, **option)
    assert model.automatic_optimization
    steps = -(-trainer.num_training_batches // option.get("accumulate_grad_batches", 1))
    assert trainer.global_step == steps


@pytest.mark.parametrize("trigger", [{"every_n_train_steps": 5}, {"train_time_interval": timedelta(0)}])
def test_checkpoints_every_n_steps_or_minutes_are_seen_and_left_to_lightning(trigger, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, **trigger)
    assert internals.saves_within_epochs(checkpoint)  # the private settings read
    assert not internals.saves_within_epochs(ModelCheckpoint(dirpath=tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, trainer = fit_digits(FastModel, callbacks=[checkpoint], enable_checkpointing=True)
    assert model.automatic_optimization
    assert not [w for w in caught if "pre-optimization" in str(w.message)]
    assert len(list(tmp_path.glob("*.ckpt"))) >= trainer.num_training_batches // 5  # saved within the epoch


class HookNames(L.Callback):
    """The hook names Lightning records on the module, seen through its `__setattr__`."""

    def __init__(self) -> None:
        self.seen: set[str] = set()


def test_lightning_records_the_hook_it_is_in_as_current_fx_name():
    names = HookNames()

    class Recording(FastModel):
        def __setattr__(self, name, value) -> None:
            if name == "_current_fx_name" and value:
                names.seen.add(value)
            super().__setattr__(name, value)

    fit_digits(Recording, limit_train_batches=2, limit_val_batches=1)
    assert {"training_step", "on_train_batch_end", "validation_step"} <= names.seen


def test_lightning_reads_the_training_step_signature_that_the_fast_path_keeps(monkeypatch):
    from lightning.pytorch.loops import training_epoch_loop

    read = []
    lightnings = training_epoch_loop.is_param_in_hook_signature

    def counted(hook, *args, **kwargs):
        read.append(hook.__name__)
        return lightnings(hook, *args, **kwargs)

    monkeypatch.setattr(training_epoch_loop, "is_param_in_hook_signature", counted)
    _, trainer = fit_digits(FastModel, limit_train_batches=4, limit_val_batches=0)
    assert read.count("training_step") >= trainer.global_step  # once a step at least: worth keeping
    kept = internals.FastPath.training_step.__signature__
    assert inspect.signature(FastModel.training_step) is kept
    # What Lightning's check calls answers from the kept signature (a stand-in shows it is the one read).
    monkeypatch.setattr(internals.FastPath.training_step, "__signature__", inspect.signature(lambda self, *rest: 0))
    assert inspect.getfullargspec(FastModel.training_step).varargs == "rest"


def test_lightning_calls_the_profiler_around_every_hook():
    calls = []

    class Counting(internals.NoProfiler):
        def profile(self, action_name: str):
            calls.append(action_name)
            return super().profile(action_name)

    _, trainer = fit_digits(FastModel, profiler=Counting(), limit_train_batches=4, limit_val_batches=0)
    assert sum(name.endswith("on_train_batch_end") for name in calls) >= trainer.global_step  # and many more


def test_both_modes_step_counters_are_where_the_checkpoint_keeps_them(tmp_path):
    fit_digits(FastModel, enable_checkpointing=True, default_root_dir=tmp_path)
    (path,) = tmp_path.rglob("*.ckpt")
    checkpoint = load_checkpoint(path)
    loop = checkpoint["loops"]["fit_loop"]
    manual = loop["epoch_loop.manual_optimization.optim_step_progress"]
    automatic = loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert manual["total"]["completed"] == checkpoint["global_step"] and automatic["total"]["completed"] == 0
    internals.count_steps_in_both_modes(checkpoint)
    assert automatic == manual  # both now say the steps taken


# --- Exact resume ----------------------------------------------------------------------------------------


class Watch(L.Callback):
    """At each training batch's end: the batches done and whether it is the epoch's last, as we read them."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen.append((batch_idx, internals.batches_done(trainer), internals.at_last_batch(trainer)))


def test_batch_progress_counts_the_batches_done_and_knows_the_last():
    watch = Watch()
    _, trainer = fit_digits(callbacks=[watch], max_epochs=2, limit_val_batches=0)
    n = trainer.num_training_batches
    assert watch.seen == [(i, i + 1, i + 1 == n) for i in range(n)] * 2


class SaveAt(L.Callback):
    def __init__(self, last: ModelCheckpoint, step: int) -> None:
        self.last, self.step, self.saved = last, step, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.saved.append(internals.save_last(self.last, trainer))
            self.saved.append(internals.save_last(self.last, trainer))  # the same step: skipped
            self.saved.append(internals.save_last(self.last, trainer, again=True))


def test_model_checkpoint_saves_its_last_checkpoint_when_asked(tmp_path):
    last = ModelCheckpoint(dirpath=tmp_path, monitor=None, save_top_k=0, save_last=True)
    save_at = SaveAt(last, step=3)
    fit_digits(callbacks=[last, save_at], enable_checkpointing=True, max_steps=5, limit_val_batches=0)
    assert save_at.saved == [True, False, True]
    assert load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 3
