"""The training hot path: steady-state throughput, fused optimisers, compiled and channels-last nets.

Our own optimiser step and the rest of the fast path: test_lightning_internals.py. The epoch metrics counted
on the device: test_metrics.py."""

from __future__ import annotations

import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from experiments.data import DigitsDataModule
from experiments.models.model import Model, prepare_net
from experiments.models.nets import build_net
from experiments.models.optim import build_optimizer
from experiments.reporting.callbacks import Throughput
from experiments.run.recovery import LastCheckpoint
from experiments.run.recovery import ModelCheckpoint as KeyedOnce

NET = {"_target_": "experiments.models.nets.MLP", "width": 32, "depth": 1}
ADAMW = {"_target_": "experiments.models.optim.AdamW", "lr": 0.01, "weight_decay": 0.01}


def test_optimizers_use_fused_kernels_and_skip_decay_on_biases():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    for config in (
        ADAMW,
        {"_target_": "experiments.models.optim.Adam", "lr": 0.1},
        {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
    ):
        optimizer = build_optimizer(net, config)
        assert all(group["fused"] for group in optimizer.param_groups)
        assert [len(g["params"]) for g in optimizer.param_groups] == [1, 3]  # as checkpoints of earlier runs hold
        assert optimizer.param_groups[1]["weight_decay"] == 0.0
        unfused = build_optimizer(net, config, fused=False)  # what gradient clipping under mixed precision takes
        assert all(group["foreach"] and not group["fused"] for group in unfused.param_groups)


class SlowCheckpoint(L.Callback):
    """Stands in for a checkpoint written after validation: time that is not training."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            time.sleep(0.5)


def fit_digits(module_class: type[Model] = Model, **trainer_options) -> tuple[Model, L.Trainer]:
    """A seeded run on the digits, one epoch unless told otherwise, with no logger, checkpoints or bar."""
    L.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=64)
    onecycle = {"_target_": "experiments.models.optim.one_cycle", "pct_start": 0.3}
    model = module_class(data.spec, {**NET, "dropout": 0.1}, ADAMW, onecycle)
    options = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, **trainer_options}
    trainer = L.Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **options)
    trainer.fit(model, datamodule=data)
    return model, trainer


def test_throughput_counts_training_batches_only():
    throughput = Throughput()
    _, trainer = fit_digits(
        max_epochs=2,
        val_check_interval=0.5,  # validation in the middle of each epoch too
        callbacks=[throughput, SlowCheckpoint()],
    )
    training_samples = len(trainer.datamodule.splits["train"][1])
    assert [samples for samples, _ in throughput.epochs] == [training_samples] * 2
    assert all(seconds < 0.4 for _, seconds in throughput.epochs)  # two sleeps per epoch left out
    assert throughput.samples_per_second == pytest.approx(training_samples / throughput.epochs[1][1])
    assert set(trainer.callback_metrics) >= {"train/loss", "train/acc", "train/f1", "val/loss", "val/acc", "val/f1"}


def test_compile_switch_compiles_in_place_and_keeps_checkpoint_keys():
    # A full compiled run takes minutes on a CPU (measured in docs/benchmarks.md); here only the switch.
    net = build_net({"_target_": "experiments.models.nets.CNN", "channels": [4]}, DigitsDataModule.spec)
    keys = set(net.state_dict())
    prepare_net(net, torch.device("cpu"), compile=False)
    assert net._compiled_call_impl is None
    prepare_net(net, torch.device("cpu"), compile=True)
    assert net._compiled_call_impl is not None and set(net.state_dict()) == keys
    assert next(net.parameters()).is_contiguous()  # channels-last only on GPUs


def test_channels_last_on_gpus_for_convolutional_nets_only():
    conv, mlp = (build_net({"_target_": f"experiments.models.nets.{n}"}, DigitsDataModule.spec) for n in ("CNN", "MLP"))
    cuda = torch.device("cuda")  # only read for its type: no GPU needed to decide
    conv_weight = next(m.weight for m in conv.modules() if isinstance(m, torch.nn.Conv2d))
    prepare_net(conv, cuda, compile=False)
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    prepare_net(mlp, cuda, compile=False)  # nothing to change, and nothing breaks


def test_checkpoint_state_keys_are_lightnings_computed_once(tmp_path):
    settings = {"dirpath": tmp_path, "monitor": "val/acc", "mode": "max", "every_n_epochs": 2}
    ours, lightnings = KeyedOnce(**settings), ModelCheckpoint(**settings)
    assert ours.state_key == lightnings.state_key  # a checkpoint written with either resumes with the other
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=5)
    expected = ModelCheckpoint.state_key.fget(last)  # as Lightning would build it
    for callback in (ours, last):
        callback._generate_state_key = None  # not called again: the key was computed in __init__
    assert last.state_key == expected and ours.state_key == lightnings.state_key
