"""Bad configs, table-driven: each ends in exit code 2 and one line naming the key, the value and what is
allowed, before any data is read and without leaving a run directory behind.

The table runs the command line's own entry point (`experiments.commands.train.main`) in-process: a fresh
interpreter per case would cost seconds each; `test_config.py` runs other bad overrides (unknown options
and keys, unparsable values) as real subprocesses.
The machine is pinned to two CPU cores and no GPU, so the device cases read the same everywhere.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
import torch

from experiments.commands.train import main

BAD_CONFIGS = [
    ("optimizer.lr=0", "optimizer.lr=0 is not allowed: it must be a number > 0.0"),
    ("optimizer._target_=torch.optim.Adamx", "optimizer._target_='torch.optim.Adamx' cannot be imported: "),
    ("optimizer=lamb", "optimizer=lamb: no such option; choose from adam, adamw, sgd"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas=[0.9, 1.5] is not allowed: it must be two numbers >= 0.0 and < 1.0"),
    ("data.batch_size=0", "data.batch_size=0 is not allowed: it must be an integer >= 1"),
    ("data=imdb data.seq_len=0", "data.seq_len=0 is not allowed: it must be an integer >= 1 and <= 10000"),
    ("data=imdb data.seq_len=400000", "data.seq_len=400000 is not allowed: it must be an integer >= 1 and <= 10000"),
    ("data=imdb data.vocab_size=2", "data.vocab_size=2 is not allowed: it must be an integer >= 3"),
    ("data=mnist data.val_size=1.5", "data.val_size=1.5 is not allowed: it must be a number >= 0.0 and < 1.0"),
    ("data.val_size=0.6 data.test_size=0.5", "data.val_size + data.test_size = 1.1 leaves nothing to train on"),
    # Reflect-padded shifts: up to one pixel less than the image's side (CIFAR-10's 32).
    ("data=cifar10 data.translate=40", "data.translate=40 is not allowed: it must be an integer >= 0 and <= 31"),
    ("data=mnist data.download=maybe", "data.download='maybe' is not allowed: it must be true or false"),
    ("trainer=gpu", "trainer.accelerator='gpu' is not available: no CUDA GPU here; use trainer=cpu"),
    (
        "trainer.devices=4",
        "trainer.devices=4 is not available: this machine has 2 CPU core(s) and no CUDA GPU; "
        "choose an integer from 1 to 2, or auto",
    ),
    ("trainer.devices=0", "trainer.devices=0 is not available"),
    ("trainer.accelerator=abacus", "You selected an invalid accelerator name: `accelerator='abacus'`."),  # Lightning's
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is not allowed: it must be a number >= 0.0"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 is not allowed: it must be a count of"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is not allowed: it must be an integer >= 1"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is not allowed: it must be an integer"),
    ("model=rnn model.cell=transformer", "model.cell='transformer' is not allowed: it must be one of"),
    ("model=mlp model.ngrams=2", "model.ngrams=2 needs hash buckets for the n-grams: set model.ngram_buckets"),
    ("scheduler=onecycle scheduler.pct_start=0", "scheduler.pct_start=0 is not allowed: it must be a number > 0.0"),
    ("scheduler=onecycle scheduler.anneal=cubic", "scheduler.anneal='cubic' is not allowed: it must be one of cos,"),
    ("model._target_=my_nets.Wide", "model._target_='my_nets.Wide' cannot be imported: "),
    ("model=mlp +model.wdth=3", "model: MLP got an unexpected keyword argument 'wdth'; `--cfg job` shows"),
    ("optimizer._target_=torch.optim.LBFGS", "optimizer: LBFGS got an unexpected keyword argument 'betas'"),
    (
        "scheduler._target_=torch.optim.lr_scheduler.StepLR",
        "scheduler: StepLR missing a required argument: 'step_size'",
    ),
    ("optimizer=sgd optimizer.momentum=0", "optimizer.nesterov=true needs optimizer.momentum > 0 and no dampening"),
    ("optimizer=adam +optimizer.eps=-1", "optimizer.eps=-1 is not allowed: it must be a number >= 0.0"),
    ("optimizer.norm_lr_scale=0", "optimizer.norm_lr_scale=0 is not allowed: it must be a number > 0.0"),
    ("deterministic=maybe", "deterministic='maybe' is not allowed: it must be true or false"),
    ("seed=-1", "seed=-1 is not allowed: it must be an integer >= 0"),
    (
        "callbacks.last_checkpoint.every_n_train_steps=-5",
        "callbacks.last_checkpoint.every_n_train_steps=-5 is not allowed: it must be an integer >= 0",
    ),
    (
        "callbacks.last_checkpoint.every_n_epochs=0",
        "callbacks.last_checkpoint.every_n_epochs=0 is not allowed: it must be an integer >= 1",
    ),
    ("objective=val/accc", "objective='val/accc' is not allowed: it must be one of val/loss, val/acc, val/f1, train/"),
    ("resume=no/such/run", "resume=no/such/run: no checkpoint at"),
    ("init_from=no/such.ckpt", "no checkpoint at no/such.ckpt"),
]


@pytest.fixture
def two_cores_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def run_main(tmp_path: Path, monkeypatch, capsys, *arguments: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["experiments", *arguments])
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def error_line_leaving_nothing(tmp_path: Path, monkeypatch, capsys, *arguments: str) -> str:
    """The one line `python -m experiments ARGUMENTS` ends with, exit code 2, with no file left behind."""
    work = tmp_path / "work"
    work.mkdir()
    code, stderr = run_main(work, monkeypatch, capsys, *arguments)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert [p for p in work.rglob("*") if p.is_file()] == []  # no run directory, no cache
    return lines[0].removeprefix("error: ").removesuffix("  (EXPERIMENTS_DEBUG=1 shows the traceback)")


# One of each kind in the fast tier (a value rule, a group option, a _target_, a net's and a schedule's own
# check, the machine, the objective, a path); all of them in the full tier.
FAST = {
    "optimizer.lr=0",
    "optimizer=lamb",
    "data=imdb data.seq_len=0",
    "model._target_=my_nets.Wide",
    "model=mlp +model.wdth=3",
    "scheduler=onecycle scheduler.pct_start=0",
    "trainer=gpu",
    "objective=val/accc",
    "resume=no/such/run",
}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [pytest.param(o, m, id=o, marks=() if o in FAST else pytest.mark.slow) for o, m in BAD_CONFIGS],
)
def test_bad_config_exits_2_with_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, capsys, two_cores_no_gpu, overrides, message
):
    data_dir = tmp_path / "data"
    code, stderr = run_main(tmp_path, monkeypatch, capsys, *overrides.split(), f"paths.data_dir={data_dir}")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {message}"), lines[0]
    assert lines[0].endswith("(EXPERIMENTS_DEBUG=1 shows the traceback)")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no run directory, no data touched
    assert len(BAD_CONFIGS) >= 20


def test_the_debug_switch_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from experiments.core.errors import UserError

    monkeypatch.setenv("EXPERIMENTS_DEBUG", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["experiments", "optimizer.lr=0"])
    with pytest.raises(UserError, match=r"optimizer\.lr=0 is not allowed"):
        main()


def test_what_counts_as_the_users_error():
    from hydra.errors import OverrideParseException
    from omegaconf.errors import ConfigKeyError

    from experiments.core.errors import UserError, is_user_error

    assert is_user_error(UserError("bad value")) and is_user_error(OSError(errno.ENOSPC, "No space left"))
    assert is_user_error(OverrideParseException("a=(", "mismatched input")) and is_user_error(ConfigKeyError("k"))
    assert not is_user_error(OSError(errno.EIO, "Input/output error")) and not is_user_error(ValueError("a bug"))
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    assert is_user_error(MisconfigurationException("ModelCheckpoint(monitor='val/auc') could not find the key"))


# /sys refuses new folders even to root (a folder made read-only with chmod would not stop root).
UNWRITABLE = Path("/sys/experiments-test")


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ([f"hydra.run.dir={UNWRITABLE}/run"], UNWRITABLE),
        ([f"paths.data_dir={UNWRITABLE}/data", "data=mnist"], UNWRITABLE),
    ],
    ids=["output folder", "data folder"],
)
def test_unwritable_folder_is_one_line(tmp_path, monkeypatch, capsys, overrides, path):
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system to stand for a folder nobody may write to")
    code, stderr = run_main(tmp_path, monkeypatch, capsys, *overrides)
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {path}: "), line  # "Operation not permitted" for root
    assert "choose a writable place (paths.data_dir, hydra.run.dir)" in line
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
