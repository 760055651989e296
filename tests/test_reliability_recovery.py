"""Interrupted runs, as a user meets them: the real CLI in a subprocess, stopped by SIGTERM, SIGKILL and a
SIGKILL in the middle of writing a checkpoint, each time resumed, must end with exactly the metrics and
TensorBoard curves of a run that was never interrupted (CPU, deterministic=true). Ctrl+C, a full disk, a
checkpoint that would run code and the checkpoint schedule are tried in-process or with one run each (a
loss that turns NaN: test_reliability_divergence.py).

The interrupted runs go through a small launcher that slows each training step a little and prints its
number, so that a signal lands mid-epoch on a known step; it can also stall the write of a checkpoint
half-way, so that SIGKILL lands mid-write. Everything else is the ordinary command line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.config import UserError
from experiments.recovery import load_checkpoint
from tests.conftest import run_cli

RUN = (
    "model=mlp",
    "trainer.max_epochs=4",  # 20 steps per epoch on the digits
    "deterministic=true",
    "trainer.accelerator=cpu",
    "callbacks.last_checkpoint.every_n_train_steps=5",
)

LAUNCHER = textwrap.dedent(
    """
    import io, os, sys, time
    import torch
    import experiments.models.classifier as classifier

    step = classifier.Classifier.training_step

    def paced(self, batch, batch_idx):
        time.sleep(0.02)
        print(f"step {self.global_step}", flush=True)
        return step(self, batch, batch_idx)

    classifier.Classifier.training_step = paced
    stall_from = int(os.environ.get("STALL_CHECKPOINT_FROM_STEP", "-1"))
    save = torch.save

    def stalling_save(obj, file, *args, **kwargs):  # the checkpoint writer hands torch.save an open file
        if stall_from >= 0 and isinstance(obj, dict) and obj.get("global_step", -1) >= stall_from:
            buffer = io.BytesIO()
            save(obj, buffer)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            print("checkpoint half-written", flush=True)
            time.sleep(600)
        return save(obj, file, *args, **kwargs)

    torch.save = stalling_save
    from experiments.train import main

    sys.argv[0] = "experiments"
    main()
    """
)


class Launched:
    def __init__(self, tmp_path: Path, *arguments: str, env: dict | None = None) -> None:
        launcher = tmp_path / "launch.py"
        launcher.write_text(LAUNCHER)
        # The child appends to the log, and the test reads it through a file of its own: a shared file
        # offset would let the test's reads move where the child's next write lands.
        self.log = tmp_path / "output.log"
        self.log.write_bytes(b"")  # each launch's own lines
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(launcher), *arguments],
                cwd=tmp_path,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def wait_for(self, line: str, timeout: float = 240) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.text().splitlines():
                return
            assert self.process.poll() is None, self.text()
            time.sleep(0.05)
        raise TimeoutError(f"no line {line!r}: {self.text()}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=120)

    def text(self) -> str:
        return self.log.read_text()


def checkpoint_step(path: Path) -> int:
    return load_checkpoint(path)["global_step"]


def final(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics[key] for key in ("val", "test", "objective", "epochs", "global_steps")}


def epoch_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Step -> value of the per-epoch curves. A resumed run may log a point again, at the same step with the
    same value (Lightning ends an epoch anew after an epoch-end checkpoint), never another value."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    curves = {}
    # train/* too: a checkpoint taken mid-epoch carries the epoch's tally of the batches before it.
    for tag in ("val/acc", "val/loss", "train/acc", "train/loss"):
        points = [(event.step, event.value) for event in events.Scalars(tag)]
        curves[tag] = dict(points)
        assert sorted(set(points)) == sorted(curves[tag].items()), points
    return curves


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(*RUN, "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run"


def resume(tmp_path: Path, run_dir: Path, *more: str, env: dict | None = None) -> Launched:
    return Launched(tmp_path, f"resume={run_dir}", *more, env=env)


def test_interrupted_three_ways_and_resumed_ends_exactly_like_an_uninterrupted_run(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    hint = f"continue with: python -m experiments resume={run_dir}"

    # SIGTERM in epoch 2 (what schedulers send): a checkpoint at the end of the current step, exit 143.
    run = Launched(tmp_path, *RUN, "hydra.run.dir=run")
    run.wait_for("step 27")
    assert run.stop(signal.SIGTERM) == 143, run.text()
    step = checkpoint_step(last)
    assert 28 <= step < 40
    assert run.text().splitlines()[-1] == f"stopped by SIGTERM at step {step} (epoch 2); {hint}"

    # SIGKILL in epoch 3: nothing runs on the way out; the periodic checkpoint (every 5 steps) is what is left.
    run = resume(tmp_path, run_dir)
    run.wait_for("step 47")
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    assert checkpoint_step(last) == 45
    assert not (run_dir / "metrics.json").exists()

    # SIGKILL while the checkpoint of step 65 is half-written: the one of step 60 stays whole.
    run = resume(tmp_path, run_dir, env={"STALL_CHECKPOINT_FROM_STEP": "65"})
    run.wait_for("checkpoint half-written")
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    assert checkpoint_step(last) == 60  # loads weights-only: complete
    partial = last.with_name("last.ckpt.part")
    assert partial.stat().st_size > 0  # the half-written one, under a name no run takes for a checkpoint
    with pytest.raises(UserError, match="is not a readable checkpoint"):
        load_checkpoint(partial)

    run = resume(tmp_path, run_dir)
    assert run.process.wait(timeout=300) == 0, run.text()
    assert final(run_dir) == final(uninterrupted)
    assert epoch_curves(run_dir) == epoch_curves(uninterrupted)  # the same curves, in the same folder
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.suffix != ".ckpt"] == []  # no .part left
    assert len(list(run_dir.glob("*/config.yaml"))) == 1  # one run directory, one config: .hydra/


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for config in (copy / ".hydra").glob("*.yaml"):  # (Hydra records the run directory it was given)
        config.write_text(config.read_text().replace(str(run_dir), str(copy)))
    return copy


def test_ctrl_c_saves_at_the_end_of_the_step_and_exits_130(make_config, monkeypatch):
    from experiments.models.classifier import Classifier
    from experiments.recovery import Interrupted
    from experiments.train import train

    training_step = Classifier.training_step

    def ctrl_c_at_step_12(self, batch, batch_idx):
        if self.global_step == 12:
            signal.raise_signal(signal.SIGINT)
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", ctrl_c_at_step_12)
    cfg = make_config(*RUN, "logger=none")
    before = signal.getsignal(signal.SIGINT)  # Python's own handler, or SIG_IGN in a background job
    with pytest.raises(Interrupted) as stop:
        train(cfg)
    output_dir = Path(cfg.paths.output_dir)
    assert stop.value.exit_code == 130
    assert (
        str(stop.value)
        == f"stopped by SIGINT at step 13 (epoch 1); continue with: python -m experiments resume={output_dir}"
    )
    assert checkpoint_step(output_dir / "checkpoints" / "last.ckpt") == 13
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl+C does what it did before the run again


def test_resume_applies_new_overrides_on_top_of_the_runs_own_config(tmp_path, uninterrupted):
    run_dir = copy_of(uninterrupted, tmp_path)
    result = run_cli(f"resume={run_dir}/checkpoints/last.ckpt", "trainer.max_epochs=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 5
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "max_epochs: 5" in config and "name: mlp" in config  # the run's model, the new epoch count
    assert list(epoch_curves(run_dir)["val/acc"]) == [19, 39, 59, 79, 99]


def test_a_resume_whose_settings_do_not_fit_the_checkpoint_says_so_and_keeps_the_runs_record(tmp_path, uninterrupted):
    run_dir = copy_of(uninterrupted, tmp_path)
    record = {path.name: path.read_text() for path in (run_dir / ".hydra").iterdir()}
    result = run_cli(f"resume={run_dir}", "model.width=32", "trainer.max_epochs=5", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot resume: these settings build a different net") and "model" in line
    assert {path.name: path.read_text() for path in (run_dir / ".hydra").iterdir()} == record
    # The record still holds the run's own settings, so the run can still be continued.
    result = run_cli(f"resume={run_dir}", "trainer.max_epochs=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_epochs: 5" in (run_dir / ".hydra" / "config.yaml").read_text()


def test_a_resume_that_changes_the_optimisers_parameter_groups_is_refused():
    from experiments.data import DigitsDataModule
    from experiments.models.classifier import Classifier
    from experiments.models.optim import build_optimizer
    from experiments.recovery import check_resumable

    cnn, adamw = {"name": "cnn", "channels": [4]}, {"name": "adamw", "lr": 0.01}
    model = Classifier(DigitsDataModule.spec, cnn, adamw, {"name": "constant"})
    optimizer = build_optimizer(model.net, adamw)
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    check_resumable(checkpoint, model, optimizer)  # the same settings: fine
    separate_norms = build_optimizer(model.net, {**adamw, "norm_lr_scale": 10})  # a third group
    with pytest.raises(UserError, match="3 parameter groups, the run's checkpoint has 2"):
        check_resumable(checkpoint, model, separate_norms)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, uninterrupted):
    run_dir = copy_of(uninterrupted, tmp_path)
    marker = tmp_path / "marker"
    crafted = run_dir / "checkpoints" / "last.ckpt"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"global_step": Exploit()}, crafted)
    result = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: refusing to load {crafted}: it holds more than plain values")
    assert not marker.exists()
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint(crafted)
    assert not marker.exists()


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_good_checkpoint(make_config, monkeypatch):
    import experiments.recovery as recovery
    from experiments.train import train

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


def test_a_run_that_reloads_its_loader_every_epoch_resumes_mid_epoch_exactly(tmp_path):
    # The speedrun recipe rebuilds its training loader every epoch: on resume, the loader built early (for
    # estimated_stepping_batches) is replaced at the restored epoch, and the new one must still skip ahead.
    from experiments.config import compose
    from experiments.train import train

    common = [
        "model=mlp",
        "scheduler=constant",
        "+trainer.reload_dataloaders_every_n_epochs=1",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        "trainer.max_epochs=2",
        "test=false",
        "logger=none",
        "trainer.accelerator=cpu",
    ]
    train(compose([*common, f"paths.output_dir={tmp_path / 'whole'}"]))
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", "+trainer.max_steps=30"]))
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert cut["global_step"] == 30 and cut["epoch"] == 1  # stopped in the middle of the second epoch
    train(
        compose([*common, f"paths.output_dir={tmp_path / 'cut'}", f"resume={tmp_path / 'cut/checkpoints/last.ckpt'}"])
    )
    whole, resumed = (
        load_checkpoint(tmp_path / r / "checkpoints" / "last.ckpt")["state_dict"] for r in ("whole", "cut")
    )
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_a_checkpoint_meeting_a_really_full_disk_is_a_user_error(tmp_path, monkeypatch):
    # /dev/full answers every write with ENOSPC, as a full disk does; torch.save given a path would turn
    # that into a RuntimeError (a traceback), so the checkpoint writer opens the file itself.
    from contextlib import contextmanager

    import experiments.recovery as recovery

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
    import experiments.data.files as files
    import experiments.recovery as recovery

    path = tmp_path / "last.ckpt"
    recovery.AtomicCheckpointIO().save_checkpoint({"step": 1, "weights": torch.zeros(1000)}, path)
    synced = []

    def fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_size, load_checkpoint(path)["step"]))

    monkeypatch.setattr(files.os, "fsync", fsync)
    recovery.AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert synced == [(path.stat().st_size, 1)]  # the whole new file, while the name held step 1
    assert load_checkpoint(path)["step"] == 2


@pytest.mark.parametrize("switch", ["trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2"])
def test_a_run_resumed_with_clipping_or_accumulation_goes_on_from_its_step(make_config, switch):
    # Our own step without them, Lightning's automatic optimisation with them: each mode counts its steps apart.
    from experiments.train import train

    common = ["model=mlp", "test=false", "logger=none", "trainer.accelerator=cpu"]
    first = make_config(*common, "trainer.max_epochs=1")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    steps = load_checkpoint(last)["global_step"]
    train(make_config(*common, "trainer.max_epochs=2", switch, f"resume={last}"))
    per_epoch = steps if "clip" in switch else -(-steps // 2)
    assert load_checkpoint(last)["global_step"] == steps + per_epoch


class AskToStopAtStep10(L.Callback):
    """Sets `trainer.should_stop` as Lightning's Timer (`max_time`) or early stopping do."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 10:
            trainer.should_stop = True


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
            ["+callbacks.stop._target_=tests.test_reliability_recovery.AskToStopAtStep10", "+trainer.min_epochs=3"],
            [20, 40, 60],
        ),
    ],
)
def test_the_last_checkpoint_is_saved_at_epoch_ends_that_do_not_validate_too(
    make_config, monkeypatch, overrides, saved_at
):
    # Lightning's ModelCheckpoint saves after validations instead of at epoch ends whenever validation is not
    # every epoch (here: every second one); `every_n_epochs` thins the saves out.
    import experiments.recovery as recovery
    from experiments.train import train

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
def test_a_run_whose_training_ended_mid_epoch_resumes_with_the_rest_of_that_epoch(tmp_path, every_n_epochs):
    # max_steps ends training in the middle of an epoch: saved at that epoch's end, Lightning would count the
    # epoch as complete and a resumed run would skip its last batches. It is saved as it stands mid-epoch.
    from experiments.config import compose
    from experiments.train import train

    common = [*EPOCH_ENDS, f"callbacks.last_checkpoint.every_n_epochs={every_n_epochs}", "scheduler=constant"]
    common.append("trainer.max_epochs=3")
    train(compose([*common, f"paths.output_dir={tmp_path / 'whole'}"]))
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", "+trainer.max_steps=15"]))
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 15
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", f"resume={last}"]))
    whole, resumed = (load_checkpoint(tmp_path / r / "checkpoints" / "last.ckpt") for r in ("whole", "cut"))
    assert resumed["global_step"] == whole["global_step"] == 60
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0)
    assert final(tmp_path / "cut") == final(tmp_path / "whole")


def test_a_resumed_run_that_does_not_validate_again_reports_the_validation_before_the_stop(tmp_path):
    # Validation every second epoch of three; stopped after the second, the resumed run trains the third
    # without validating. Its metrics.json must still report the second epoch's validation, as an
    # uninterrupted run's does: Lightning keeps logged values in memory only.
    from experiments.config import compose
    from experiments.train import train

    common = [*EPOCH_ENDS, "scheduler=constant", "trainer.max_epochs=3"]
    train(compose([*common, f"paths.output_dir={tmp_path / 'whole'}"]))
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", "+trainer.max_steps=40"]))
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 40
    train(compose([*common, f"paths.output_dir={tmp_path / 'cut'}", f"resume={last}"]))
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
    from hydra.utils import instantiate

    from experiments.models.classifier import Classifier
    from experiments.train import train

    cfg = make_config("model=mlp", "trainer.max_epochs=1", "test=false", "logger=none", "trainer.accelerator=cpu")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert "val/acc" in load_checkpoint(last)["callback_metrics"]
    model = Classifier.load_from_checkpoint(last, weights_only=True)
    trainer = L.Trainer(
        max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=instantiate(cfg.data))
    assert not any(key.startswith("val/") for key in trainer.callback_metrics)
