"""The checkpoint file: when last.ckpt is written (the save points), how (whole, synced, a full disk refused in
one line), and what a run resumed from it in-process goes on with and reports: the rest of an epoch cut
short, a loader rebuilt every epoch, another optimisation mode, the validation it did before the stop.
Interrupted runs through the command line: test_reliability_recovery.py.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from experiments.core.errors import UserError
from experiments.run.recovery import load_checkpoint
from tests.conftest import RUN, checkpoint_step, final


def stopped_and_resumed(tmp_path: Path, common: list[str], stop: str) -> dict:
    """Train `common` whole (in tmp_path/whole), and again (in tmp_path/cut) stopped by the override `stop`, then
    resumed from its last.ckpt. Returns that checkpoint as the stop left it."""
    from experiments.core.config import compose
    from experiments.run.task import train

    train(compose([*common, f"paths.output_dir={tmp_path / 'whole'}"]))
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", stop]))
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    stopped = load_checkpoint(last)
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", f"resume={last}"]))
    return stopped


def assert_same_weights(tmp_path: Path) -> None:
    """The whole run's last weights and the stopped-and-resumed run's, bit for bit."""
    whole, resumed = (
        load_checkpoint(tmp_path / r / "checkpoints" / "last.ckpt")["state_dict"] for r in ("whole", "cut")
    )
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_good_checkpoint(make_config, monkeypatch):
    import experiments.run.recovery as recovery
    from experiments.run.task import train

    save, saved = torch.save, []

    def disk_fills_up(obj, file, *args, **kwargs):
        if len(saved) == 2:  # the third checkpoint: half of it fits
            file.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(file)
        return save(obj, file, *args, **kwargs)

    monkeypatch.setattr(recovery.torch, "save", disk_fills_up)
    cfg = make_config(*RUN, "logger=none")
    with pytest.raises(UserError) as error:
        train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert str(error.value) == f"cannot write the checkpoint {checkpoints}/last.ckpt: No space left on device"
    monkeypatch.undo()
    assert checkpoint_step(checkpoints / "last.ckpt") == 10  # the previous one, whole
    assert not list(checkpoints.glob("*.part"))


@pytest.mark.parametrize("reload", [False, True], ids=["one_loader", "loader_per_epoch"])
@pytest.mark.slow  # three runs each, bit for bit: the full tier
def test_a_run_resumed_in_a_later_epoch_goes_on_with_the_next_batch_exactly(tmp_path, reload):
    # The loader goes on from Lightning's count of the batches done, which it restores before the first batch
    # is drawn. The speedrun recipe rebuilds its training loader every epoch: on resume, the loader built early
    # (for estimated_stepping_batches) is replaced at the restored epoch, and the new one must still skip ahead.
    common = [
        "model=mlp",
        "scheduler=constant",
        f"+trainer.reload_dataloaders_every_n_epochs={int(reload)}",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        "trainer.max_epochs=2",
        "test=false",
        "logger=none",
        "trainer.accelerator=cpu",
    ]
    cut = stopped_and_resumed(tmp_path, common, "+trainer.max_steps=30")
    assert cut["global_step"] == 30 and cut["epoch"] == 1  # stopped in the middle of the second epoch
    assert_same_weights(tmp_path)


def test_a_checkpoint_meeting_a_really_full_disk_is_a_user_error(tmp_path, monkeypatch):
    # /dev/full answers every write with ENOSPC, as a full disk does; torch.save given a path would turn
    # that into a RuntimeError (a traceback), so the checkpoint writer opens the file itself.
    from contextlib import contextmanager

    import experiments.run.recovery as recovery

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system to stand for a full disk")

    @contextmanager
    def onto_a_full_disk(destination):
        yield Path("/dev/full")

    monkeypatch.setattr(recovery, "written_atomically", onto_a_full_disk)
    with pytest.raises(UserError, match="No space left on device"):
        recovery.AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(1000)}, tmp_path / "last.ckpt")


def test_a_checkpoint_is_on_the_disk_before_it_replaces_the_previous_one(tmp_path, monkeypatch):
    # A machine that crashes or loses power keeps what was synced: the new file must be synced, whole,
    # while the old one still holds the checkpoint's name.
    import experiments.core.atomic as atomic
    import experiments.run.recovery as recovery

    path = tmp_path / "last.ckpt"
    recovery.AtomicCheckpointIO().save_checkpoint({"step": 1, "weights": torch.zeros(1000)}, path)
    synced = []

    def fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_size, load_checkpoint(path)["step"]))

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    recovery.AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(2000)}, path)  # a larger file
    monkeypatch.undo()
    assert synced == [(path.stat().st_size, 1)]  # the whole new file, while the name held step 1
    assert load_checkpoint(path)["step"] == 2


@pytest.mark.parametrize(
    "switch", ["trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2", "fast_path=false"]
)
def test_a_run_resumed_in_the_other_optimisation_mode_goes_on_from_its_step(make_config, switch):
    # The fast path's own step without them, Lightning's automatic optimisation with them or off the fast path:
    # each mode counts its steps apart.
    from experiments.run.task import train

    common = ["model=mlp", "test=false", "logger=none", "trainer.accelerator=cpu"]
    first = make_config(*common, "trainer.max_epochs=1")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    steps = load_checkpoint(last)["global_step"]
    train(make_config(*common, "trainer.max_epochs=2", switch, f"resume={last}"))
    per_epoch = -(-steps // 2) if "accumulate" in switch else steps
    assert load_checkpoint(last)["global_step"] == steps + per_epoch


class AskToStopAtStep10(L.Callback):
    """Sets `trainer.should_stop` as Lightning's Timer (`max_time`) or early stopping do."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 10:
            trainer.should_stop = True


class RecordProgressBar(L.Callback):
    """What Lightning's progress bar shows at each training epoch's end, (epoch, values), run after run."""

    seen: list[tuple[int, dict]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        RecordProgressBar.seen.append((trainer.current_epoch, dict(trainer.progress_bar_metrics)))


EPOCH_ENDS = (
    "model=mlp",
    "deterministic=true",
    "trainer.accelerator=cpu",
    "trainer.check_val_every_n_epoch=2",
    "callbacks.last_checkpoint.every_n_train_steps=0",
    "test=false",
    "logger=none",
)


@pytest.mark.parametrize(
    ("overrides", "saved_at"),
    [
        (["callbacks.last_checkpoint.every_n_epochs=1"], [20, 40, 60]),
        (["callbacks.last_checkpoint.every_n_epochs=2"], [40, 60]),  # and the last epoch's end
        (
            ["callbacks.last_checkpoint.every_n_epochs=2", "callbacks.last_checkpoint.every_n_train_steps=20"],
            [20, 40, 60],
        ),
        (["+trainer.val_check_interval=0.5"], [20, 30, 40, 60]),  # after the validation within epoch 2 too
        # A step save that a validation follows is saved again after it (it may name a best-model file since gone).
        (
            ["+trainer.val_check_interval=0.5", "callbacks.last_checkpoint.every_n_train_steps=10"],
            [10, 20, 30, 30, 40, 50, 60],
        ),
        # A stop asked for at step 10 that min_epochs holds off: saved at epoch ends only, not at every step.
        (
            ["+callbacks.stop._target_=tests.test_reliability_checkpoints.AskToStopAtStep10", "+trainer.min_epochs=3"],
            [20, 40, 60],
        ),
    ],
)
def test_the_last_checkpoint_is_saved_at_epoch_ends_that_do_not_validate_too(
    make_config, monkeypatch, overrides, saved_at
):
    # Lightning's ModelCheckpoint saves after validations instead of at epoch ends whenever validation is not
    # every epoch (here: every second one); `every_n_epochs` thins the saves out.
    import experiments.run.recovery as recovery
    from experiments.run.task import train

    save, saved = recovery.AtomicCheckpointIO.save_checkpoint, []

    def recording(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt":
            saved.append(checkpoint["global_step"])
        return save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(recovery.AtomicCheckpointIO, "save_checkpoint", recording)
    cfg = make_config(*EPOCH_ENDS, "trainer.max_epochs=3", *overrides)
    train(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["global_steps"] == 60  # 20 an epoch
    assert saved == saved_at


@pytest.mark.parametrize("every_n_epochs", [1, 2])
@pytest.mark.slow  # three runs each, bit for bit: the full tier
def test_a_run_whose_training_ended_mid_epoch_resumes_with_the_rest_of_that_epoch(tmp_path, every_n_epochs):
    # max_steps ends training in the middle of an epoch: saved at that epoch's end, Lightning would count the
    # epoch as complete and a resumed run would skip its last batches. It is saved as it stands mid-epoch.
    common = [*EPOCH_ENDS, f"callbacks.last_checkpoint.every_n_epochs={every_n_epochs}", "scheduler=constant"]
    common.append("trainer.max_epochs=3")
    assert stopped_and_resumed(tmp_path, common, "+trainer.max_steps=15")["global_step"] == 15
    whole, resumed = (load_checkpoint(tmp_path / r / "checkpoints" / "last.ckpt") for r in ("whole", "cut"))
    assert resumed["global_step"] == whole["global_step"] == 60
    assert_same_weights(tmp_path)
    assert final(tmp_path / "cut") == final(tmp_path / "whole")


@pytest.mark.slow  # three runs each, bit for bit: the full tier
def test_a_resumed_run_that_does_not_validate_again_reports_the_validation_before_the_stop(tmp_path):
    # Validation every second epoch of three; stopped after the second, the resumed run trains the third
    # without validating. Its metrics.json must still report the second epoch's validation, as an
    # uninterrupted run's does: Lightning keeps logged values in memory only.
    from experiments.core.config import compose
    from experiments.run.task import train

    common = [*EPOCH_ENDS, "scheduler=constant", "trainer.max_epochs=3"]
    common.append(f"+callbacks.bar._target_={__name__}.RecordProgressBar")
    RecordProgressBar.seen.clear()
    assert stopped_and_resumed(tmp_path, common, "+trainer.max_steps=40")["global_step"] == 40
    # The live bar (on a terminal) shows the same values at the last epoch's end: the whole run's third
    # epoch against the resumed run's (the stopped run's two epochs in between).
    (whole_epoch, whole_bar), (resumed_epoch, resumed_bar) = RecordProgressBar.seen[2], RecordProgressBar.seen[-1]
    assert whole_epoch == resumed_epoch == 2 and len(RecordProgressBar.seen) == 6
    assert {"val/loss", "val/acc"} <= set(whole_bar) and resumed_bar == whole_bar
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    whole, resumed = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("whole", "cut"))
    assert resumed["global_steps"] == whole["global_steps"] == 60
    assert {"val/loss", "val/acc"} <= set(whole["val"])
    assert resumed["val"] == whole["val"]
    assert resumed["objective"] == whole["objective"]
    # Resumed once more, with nothing left to train (as after a crash during the test): the same report.
    train(
        compose([*common, f"paths.output_dir={tmp_path / 'cut'}", f"resume={last}", "callbacks.model_checkpoint=null"])
    )
    again = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert again["global_steps"] == 60 and again["val"] == whole["val"]
    assert again["objective"]["value"] == whole["val"]["val/acc"]  # without a checkpoint callback: the last val/acc


def test_a_model_loaded_from_a_checkpoint_brings_no_old_metrics_into_a_new_fit(make_config):
    from experiments.core.build import build
    from experiments.models.model import Model
    from experiments.run.task import train

    # Stopped mid-epoch after a validation (at step 10 of 20): the checkpoint holds validation values, and
    # the epoch's tally and step losses so far, none of which a new fit of the loaded model is to report.
    cfg = make_config(
        "model=mlp",
        "trainer.max_epochs=1",
        "+trainer.val_check_interval=10",
        "+trainer.max_steps=15",
        "trainer.log_every_n_steps=5",
        "test=false",
        "logger=csv",
        "trainer.accelerator=cpu",
    )
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert "val/acc" in checkpoint["callback_metrics"] and checkpoint["epoch_so_far"]["steps"] == [4, 9, 14]
    model = Model.load_from_checkpoint(last, weights_only=True)
    assert model.step_losses == [] and model.tallies["train"].sizes == []
    trainer = L.Trainer(
        max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=build(cfg.data, "data", L.LightningDataModule))
    assert not any(key.startswith("val/") for key in trainer.callback_metrics)
