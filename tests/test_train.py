"""The task in-process: every model trains on the bundled digits, checkpoints reload safely, seeds repeat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.core.lightning_internals import NoProfiler
from experiments.data import DigitsDataModule
from experiments.models.model import Model
from experiments.run.task import train
from experiments.run.trainer import pick_benchmark, pick_profiler
from tests.conftest import best_checkpoint

QUICK = ("trainer.max_epochs=2", "logger=none", "trainer.accelerator=cpu")


def read_metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.parametrize("model", ["mlp", "cnn", "rnn"])
def test_every_model_trains_and_learns(make_config, model):
    cfg = make_config(f"model={model}", *QUICK)
    objective = train(cfg)
    metrics = read_metrics(cfg)
    assert objective == metrics["objective"]["value"] > 0.5  # two epochs already beat chance (0.1) by far
    assert metrics["test"]["test/acc"] > 0.5
    assert metrics["epochs"] == 2 and metrics["parameters"] > 0 and metrics["samples_per_second"] > 0
    assert best_checkpoint(cfg.paths.output_dir).is_file()
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_the_objective_may_be_any_metric_the_run_logs(make_config):
    cfg = make_config("model=mlp", "objective=train/loss", "objective_mode=min", "test=false", *QUICK)
    objective = train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["objective"] == {"metric": "train/loss", "mode": "min", "value": objective} and objective > 0
    assert best_checkpoint(cfg.paths.output_dir).is_file()


def test_any_torch_optimiser_and_a_schedule_on_the_objective(make_config):
    # ReduceLROnPlateau told that a rising accuracy is no improvement (mode=min): the rate halves after each epoch
    # but the first, stepped by Lightning once an epoch on the objective (the fast path leaves it to Lightning),
    # after the epoch's checkpoint: the last one holds the rate after two epochs' steps.
    cfg = make_config(
        "model=mlp",
        "optimizer._target_=torch.optim.RAdam",
        "~optimizer.betas",
        "scheduler=plateau",
        "scheduler.mode=min",
        "scheduler.patience=0",
        "trainer.max_epochs=3",
        "test=false",
        "logger=none",
        "trainer.accelerator=cpu",
    )
    train(cfg)
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    (optimizer,) = checkpoint["optimizer_states"]
    assert [group["lr"] for group in optimizer["param_groups"]] == [cfg.optimizer.lr / 2] * 2
    assert checkpoint["lr_schedulers"][0]["num_bad_epochs"] == 0 and checkpoint["global_step"] > 3


@pytest.mark.slow  # several seconds each on a CPU: the full tier
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("clip", ["1.0", "null"])
def test_mixed_precision_with_and_without_gradient_clipping(make_config, clip, precision):
    # Clipping: Lightning's automatic step, which refuses to clip for a fused optimiser under mixed precision
    # (the RNN recipes on any GPU). Without: our own step, its backward inside the autocast region; with
    # 16-mixed the loss scaler scales the backward and unscales inside the optimiser's step.
    cfg = make_config("model=rnn", f"trainer.gradient_clip_val={clip}", f"trainer.precision={precision}", *QUICK)
    assert train(cfg) > 0.3


@pytest.mark.slow  # several seconds each on a CPU: the full tier
@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_whole_model_precisions_get_inputs_of_their_type(make_config, precision):
    # Pixels become floats after Lightning converted the batch: the data module converts them itself.
    cfg = make_config("model=cnn", f"trainer.precision={precision}", *QUICK)
    assert train(cfg) > 0.3


@pytest.mark.parametrize(
    "option", ["fast_dev_run", "limit_batches", pytest.param("overfit", marks=pytest.mark.slow), "profiler"]
)
def test_every_debug_option_runs(make_config, option):
    cfg = make_config(f"debug={option}", "trainer.accelerator=cpu", "model=mlp")
    assert isinstance(train(cfg), float)


def test_objective_can_be_minimised(make_config):
    cfg = make_config("objective=val/loss", "objective_mode=min", *QUICK)
    assert train(cfg) == pytest.approx(read_metrics(cfg)["objective"]["value"])
    assert read_metrics(cfg)["objective"]["metric"] == "val/loss"


def test_best_checkpoint_loads_weights_only_and_reproduces_test_accuracy(make_config):
    cfg = make_config("trainer.max_epochs=3", *QUICK[1:])
    train(cfg)
    metrics = read_metrics(cfg)
    best = best_checkpoint(cfg.paths.output_dir)
    checkpoint = torch.load(best, weights_only=True)  # no pickled code inside
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "experiments.models.nets.CNN"  # a plain string

    model = Model.load_from_checkpoint(best, map_location="cpu").eval()
    data = DigitsDataModule(seed=cfg.seed)
    data.setup()
    correct = 0
    with torch.no_grad():
        for batch in data.test_dataloader():
            x, y = data.on_after_batch_transfer(batch, 0)
            correct += (model(x).argmax(1) == y).sum().item()
    assert correct / len(data.splits["test"][1]) == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)


def test_same_seed_same_result_when_deterministic(make_config, tmp_path):
    results = []
    for name in ("first", "second"):
        cfg = make_config("deterministic=true", "model=mlp", *QUICK, f"paths.output_dir={tmp_path / name}")
        train(cfg)
        results.append(read_metrics(cfg)["val"])
    assert results[0] == results[1]


def test_a_run_with_every_optional_callback_and_the_logger_dropped(make_config, capsys):
    optional = ("model_checkpoint", "last_checkpoint", "lr_monitor", "progress_bar", "dashboards")
    cfg = make_config(*QUICK, *(f"callbacks.{name}=null" for name in optional))
    train(cfg)
    metrics = read_metrics(cfg)  # written although nothing else made the run's directory
    assert metrics["best_checkpoint"] == "" and metrics["test"]["test/acc"] > 0.3
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # no default checkpoint in their place
    assert "it/s" not in capsys.readouterr().out  # nor Lightning's default progress bar (items per second)


def test_cudnn_autotuning_is_on_unless_the_run_is_deterministic(make_config):
    assert pick_benchmark(make_config()) is True
    assert pick_benchmark(make_config("deterministic=true")) is False
    assert pick_benchmark(make_config("trainer.benchmark=false")) is False


def test_runs_profile_nothing_at_next_to_no_cost_unless_asked(make_config):
    assert isinstance(pick_profiler(make_config()), NoProfiler)
    assert pick_profiler(make_config("fast_path=false")) is None  # Lightning's own default
    assert pick_profiler(make_config("debug=profiler")) == "simple"
    profiler = NoProfiler()
    # One shared context for every hook call, where Lightning's default builds a new one each time.
    assert profiler.profile("run_training_batch") is profiler.profile("[LightningModule]Model.training_step")
    with profiler.profile("run_training_batch"), profiler.profile("[LightningModule]Model.training_step"):
        pass  # and it nests, as Lightning's hook calls do
