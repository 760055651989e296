"""Interrupted runs, as a user meets them: the real CLI in a subprocess, stopped by SIGTERM, SIGKILL and a
SIGKILL in the middle of writing a checkpoint, each time resumed, must end with exactly the metrics and
TensorBoard curves of a run that was never interrupted (CPU, deterministic=true). Ctrl+C, resumes with
other settings and a checkpoint that would run code are tried in-process or with one run each. The
checkpoint file itself (save points, full disks, in-process resumes): test_reliability_checkpoints.py; a
loss that turns NaN: test_reliability_divergence.py.

The interrupted runs go through a small launcher that slows each training step a little and prints its
number, so that a signal lands mid-epoch on a known step; it can also stall the write of a checkpoint
half-way, so that SIGKILL lands mid-write. Everything else is the ordinary command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.core.errors import UserError
from experiments.run.recovery import load_checkpoint
from tests.conftest import RUN, checkpoint_step, final, run_cli

pytestmark = pytest.mark.slow  # subprocess runs of the whole CLI: the full tier

LAUNCHER = textwrap.dedent(
    """
    import io, os, sys, time
    import torch
    import experiments.models.model as model_module

    step = model_module.Model.training_step

    def paced(self, batch, batch_idx):
        time.sleep(0.02)
        print(f"step {self.global_step}", flush=True)
        return step(self, batch, batch_idx)

    model_module.Model.training_step = paced
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
    from experiments.commands.train import main

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
    from experiments.core.errors import Interrupted, classify
    from experiments.models.model import Model
    from experiments.run.task import train

    training_step = Model.training_step

    def ctrl_c_at_step_12(self, batch, batch_idx):
        if self.global_step == 12:
            signal.raise_signal(signal.SIGINT)
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(Model, "training_step", ctrl_c_at_step_12)
    cfg = make_config(*RUN, "logger=none")
    before = signal.getsignal(signal.SIGINT)  # Python's own handler, or SIG_IGN in a background job
    with pytest.raises(Interrupted) as stop:
        train(cfg)
    output_dir = Path(cfg.paths.output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    assert classify(stop.value).exit_code == 130
    assert (
        str(stop.value)
        # A run outside Hydra's run directories (compose(), in-process) is continued from its checkpoint file.
        == f"stopped by SIGINT at step 13 (epoch 1); continue with: python -m experiments resume={last}"
    )
    assert checkpoint_step(output_dir / "checkpoints" / "last.ckpt") == 13
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl+C does what it did before the run again


def test_resume_applies_new_overrides_on_top_of_the_runs_own_config(tmp_path, uninterrupted):
    run_dir = copy_of(uninterrupted, tmp_path)
    result = run_cli(f"resume={run_dir}/checkpoints/last.ckpt", "trainer.max_epochs=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 5
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    # the run's model, the new epoch count
    assert "max_epochs: 5" in config and "_target_: experiments.models.nets.MLP" in config
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
    from experiments.models.model import Model
    from experiments.models.optim import build_optimizer, check_optimizer
    from experiments.run.recovery import check_resumable

    cnn, adamw = (
        {"_target_": "experiments.models.nets.CNN", "channels": [4]},
        {"_target_": "experiments.models.optim.AdamW", "lr": 0.01},
    )
    model = Model(DigitsDataModule.spec, cnn, adamw, {})
    optimizer = build_optimizer(model.net, adamw)
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    check_resumable(checkpoint, model, check_optimizer(model.net, adamw))  # the same settings: fine
    separate_norms = check_optimizer(model.net, {**adamw, "norm_lr_scale": 10})  # a third group
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
