"""Every config option composes; the CLI answers --help and --cfg; bad input ends in one line, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from experiments.core.config import config_dir, validate
from experiments.core.errors import UserError
from tests.conftest import run_cli

TABLES = ("breast_cancer", "diabetes")
GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((config_dir() / group).glob("*.yaml"))]


def test_the_groups_a_user_expects_are_there():
    assert {
        "data",
        "model",
        "optimizer",
        "scheduler",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "debug",
    } <= set(GROUPS)
    assert {
        ("model", "mlp"),
        ("model", "cnn"),
        ("model", "rnn"),
        ("trainer", "cpu"),
        ("trainer", "gpu"),
    } <= set(OPTIONS)


def checked(cfg) -> None:
    """What a run checks before it writes anything: the central rules, the data module built (nothing is read or
    downloaded), the net built for its spec, and the objective, optimiser and schedule checked."""
    import lightning as L

    from experiments.core.build import build
    from experiments.run.task import build_model

    validate(cfg)
    build_model(cfg, build(cfg.data, "data", L.LightningDataModule).spec)


def users_files(option: str, folder: Path) -> list[str]:
    """The overrides that point a data option which reads one's own files (`???` in its config) at some."""
    import numpy as np
    from PIL import Image

    if option == "image_folder":
        for name in ("cats", "dogs"):
            (folder / "photos" / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "photos" / name / "1.png")
        return [f"data.root={folder / 'photos'}"]
    if option == "text_csv":
        (folder / "texts.csv").write_text("text,label\ngood,1\nbad,0\n")
        return [f"data.path={folder / 'texts.csv'}"]
    if option == "table_csv":
        rows = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20))
        (folder / "rows.csv").write_text("x,label,colour\n" + rows)
        return [f"data.path={folder / 'rows.csv'}", f"data.data_dir={folder}", "model=mlp"]
    if option in TABLES:  # a table's columns have no order for a CNN (the default) to convolve over
        return [f"data.data_dir={folder}", "model=mlp"]
    return []


# The default weights of model=torchvision are a download (the weights paths: test_torchvision_net.py).
OFFLINE = {"model=torchvision": ["model.weights=null"]}


# Recipes and searches compose several groups at once: their checks run in the full tier (as do their sweeps).
@pytest.mark.parametrize(
    ("group", "option"),
    [
        pytest.param(g, o, id=f"{g}={o}", marks=pytest.mark.slow if g in ("experiment", "hparams_search") else ())
        for g, o in OPTIONS
    ],
)
def test_every_option_composes_resolves_and_validates(make_config, tmp_path, group, option):
    own = users_files(option, tmp_path) if group == "data" else OFFLINE.get(f"{group}={option}", [])
    cfg = make_config(f"{group}={option}", *own)
    OmegaConf.resolve(cfg)  # every interpolation points somewhere
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"trainer\.accelerator='gpu' is not available: no CUDA GPU here"):
            checked(cfg)
    else:
        checked(cfg)


def test_overrides_reach_the_config(make_config):
    cfg = make_config("trainer.max_epochs=3", "seed=7", "optimizer.lr=0.01", "model=mlp", "model.width=64")
    assert (cfg.trainer.max_epochs, cfg.seed, cfg.optimizer.lr, cfg.model.width) == (3, 7, 0.01, 64)
    assert cfg.data.seed == 7  # the data split follows the run's seed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr=0 is not allowed: it must be a number > 0"),
        ("optimizer.lr=fast", "optimizer.lr='fast' is not allowed"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed: it must be an integer >= 1"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5 is not allowed"),
        ("model.dropout=1.0", "model.dropout=1.0 is not allowed"),
        ("model.activation=swish", "must be one of relu, gelu, tanh, sigmoid"),
        ("model.channels=[32,-1]", "model.channels=[32, -1] is not allowed"),
        ("model=mlp model.width=0", "model.width=0 is not allowed: it must be an integer >= 1"),
        ("scheduler=onecycle scheduler.pct_start=0", "scheduler.pct_start=0 is not allowed: it must be a number > 0"),
        ("optimizer._target_=torch.optim.Adamm", "optimizer._target_='torch.optim.Adamm' cannot be imported"),
        ("optimizer._target_=torch.nn.Linear", "optimizer._target_='torch.nn.Linear' is not a torch.optim"),
        ("model._target_=torch.optim.SGD", "model._target_='torch.optim.SGD' is not a torch.nn.modules.module.Module"),
        ("model=mlp +model.depth_=3", "model: MLP got an unexpected keyword argument 'depth_'"),
        ("seed=true", "seed=True is not allowed"),
    ],
)
def test_validate_names_the_key_and_what_is_allowed(make_config, override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.").replace("(", r"\(")):
        checked(make_config(*override.split()))


@pytest.mark.slow  # the command line in a subprocess: the full tier
def test_help_lists_groups_and_options(tmp_path: Path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model: cnn, mlp, rnn" in result.stdout
    assert "optimizer: adam, adamw, sgd" in result.stdout


@pytest.mark.slow  # the command line in a subprocess: the full tier
def test_cfg_job_prints_the_composed_config(tmp_path: Path):
    result = run_cli("--cfg", "job", "model=rnn", "model.hidden_size=32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.model._target_ == "experiments.models.nets.RNN" and cfg.model.hidden_size == 32
    assert not (tmp_path / "outputs").exists()  # printing the config runs nothing


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=cnnn", "error: model=cnnn: no such option; choose from cnn, mlp, rnn"),
        ("trainer.epochs=3", "error: trainer.epochs: no such key"),
        ("optimizer.lr=abc", "error: optimizer.lr='abc' is not allowed: it must be a number > 0"),
        ("trainer.max_epochs=ten", "error: trainer.max_epochs='ten' is not allowed: it must be an integer"),
        ("trainer.precision=half", "error: Precision 'half' is invalid. Allowed precision values: ("),  # Lightning's
        ("seed=[1", "error: cannot parse the override 'seed=[1'"),
    ],
)
@pytest.mark.slow  # the command line in a subprocess: the full tier
def test_bad_overrides_exit_2_with_one_line(tmp_path: Path, override, message):
    result = run_cli(override, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert "Traceback" not in result.stdout + result.stderr
