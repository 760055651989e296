"""A training loss that turns NaN or infinite: the run stops, naming the step where it happened, and no
checkpoint holds the diverged weights. On a GPU the losses are read in windows, through copies that do not
wait; `check_every_step=False` takes that path on the CPU."""

from __future__ import annotations

import math
import re
import shutil
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from experiments.core.errors import NonFiniteLoss
from experiments.run.recovery import StopOnNonFiniteLoss, load_checkpoint
from tests.conftest import RUN


def assert_saved_weights_finite(output_dir: Path) -> None:
    """Whatever was saved holds finite weights only."""
    for path in (output_dir / "checkpoints").glob("*.ckpt"):
        assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["state_dict"].values())


def diverging_run(make_config, monkeypatch, check_every_step: bool | None, *overrides: str) -> tuple[str, int, Path]:
    """Train until the loss turns NaN: (the error, the last step trained, the run directory)."""
    import experiments.run.recovery as recovery
    from experiments.run.task import train

    steps = []

    class Recording(StopOnNonFiniteLoss):
        def on_train_batch_end(self, trainer, *args) -> None:
            steps.append(trainer.global_step)
            super().on_train_batch_end(trainer, *args)

    monkeypatch.setattr(recovery, "StopOnNonFiniteLoss", partial(Recording, check_every_step=check_every_step))
    cfg = make_config(*RUN, "logger=none", "optimizer=sgd", "optimizer.lr=1e6", "scheduler=constant", *overrides)
    with pytest.raises(NonFiniteLoss) as error:
        train(cfg)
    return str(error.value), steps[-1], Path(cfg.paths.output_dir)


def named_step(message: str) -> int:
    return int(
        re.fullmatch(r"the training loss became nan at step (\d+) \(epoch 1, learning rate 1e\+06\); .*", message)[1]
    )


def test_a_loss_that_turns_nan_stops_the_run_at_that_step(make_config, monkeypatch):
    message, stopped_at, output_dir = diverging_run(make_config, monkeypatch, None)  # the CPU: every step read
    assert named_step(message) == stopped_at
    assert not (output_dir / "metrics.json").exists()
    assert_saved_weights_finite(output_dir)


def test_losses_read_in_windows_name_the_same_step_and_stop_within_two_windows(make_config, monkeypatch):
    # How a GPU run checks (copies that do not wait, read a window later), run on the CPU; no checkpoint due.
    windows = ("callbacks.last_checkpoint.every_n_train_steps=0", "trainer.log_every_n_steps=2")
    at_once, _, _ = diverging_run(make_config, monkeypatch, True, *windows)
    shutil.rmtree(make_config().paths.output_dir, ignore_errors=True)
    in_windows, stopped_at, _ = diverging_run(make_config, monkeypatch, False, *windows)
    assert in_windows == at_once
    assert named_step(in_windows) < stopped_at <= named_step(in_windows) + 2 * 2


def test_losses_read_in_windows_are_all_read_before_a_checkpoint(make_config, monkeypatch):
    # RUN saves every 5 steps, windows are 10 steps long: the save at step 5 reads the losses first, and stops.
    message, stopped_at, output_dir = diverging_run(make_config, monkeypatch, False)
    assert named_step(message) < stopped_at == 5
    assert_saved_weights_finite(output_dir)


def test_a_window_of_losses_is_read_when_the_next_one_is_sent(monkeypatch):
    from experiments.run import recovery

    reads = []

    def copy_to_host(tensor):  # as from a GPU: the copy is there once waited for
        host = torch.full_like(tensor, -1.0)
        return host, lambda: (host.copy_(tensor), reads.append(len(tensor)))

    monkeypatch.setattr(recovery, "copy_to_host", copy_to_host)
    stop = recovery.StopOnNonFiniteLoss(check_every_step=False)
    trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": 0.5}])], log_every_n_steps=4)
    losses = [1.0] * 10 + [math.nan, math.inf] + [1.0] * 8
    with pytest.raises(NonFiniteLoss) as error:
        for step, loss in enumerate(losses, start=1):
            trainer.global_step, trainer.current_epoch = step, 0
            stop.on_train_batch_start(trainer, None, None, step - 1)
            stop.on_train_batch_end(trainer, None, torch.tensor(loss), None, step - 1)
    # Windows of 4 steps: 9-12 holds the first bad loss (step 11), sent at step 12, read when 13-16 is sent.
    assert trainer.global_step == 16 and reads == [4, 4, 4]
    assert str(error.value).startswith("the training loss became nan at step 11 (epoch 1, learning rate 0.5)")

    stop = recovery.StopOnNonFiniteLoss(check_every_step=False)  # the epoch's end reads what is left at once
    for step, loss in enumerate([1.0, 1.0, math.inf], start=1):
        trainer.global_step = step
        stop.on_train_batch_start(trainer, None, None, step - 1)
        stop.on_train_batch_end(trainer, None, torch.tensor(loss), None, step - 1)
    with pytest.raises(NonFiniteLoss, match="became inf at step 3 "):
        stop.on_train_epoch_end(trainer, None)


def test_a_nan_loss_from_the_command_line_is_one_line_and_exit_code_1(tmp_path, monkeypatch, capsys):
    from experiments.commands.train import main

    monkeypatch.chdir(tmp_path)
    arguments = [*RUN, "logger=none", "optimizer=sgd", "optimizer.lr=1e6", "scheduler=constant"]
    monkeypatch.setattr(sys, "argv", ["experiments", *arguments])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: the training loss became nan at step")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a copy from GPU memory needs a CUDA GPU")
def test_a_copy_from_the_gpu_does_not_wait_and_is_whole_once_waited_for():
    from experiments.run.recovery import copy_to_host

    expected = torch.tensor([1.0, math.nan]).repeat(1 << 20) * 2
    losses = torch.tensor([1.0, math.nan], device="cuda").repeat(1 << 20)
    torch.cuda._sleep(1 << 30)  # the GPU busy for a while (about a second) before the losses are ready
    host, wait = copy_to_host(losses * 2)
    assert not wait.__self__.query()  # the copy is queued behind that work, and the host went on
    wait()
    assert host.device.type == "cpu" and host.is_pinned()
    torch.testing.assert_close(host, expected, equal_nan=True, rtol=0, atol=0)
