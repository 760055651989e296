"""Where the configs live, the resolvers they use, and the checks that turn bad values into one clear line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError
from experiments.core.rules import Rule, batch_limit, boolean, integer, is_integer, number, one_of, text, words


def config_dir() -> Path:
    """`conf/` inside the installed package (a wheel carries it there), else at the top of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml inside {package} or at the top of its source checkout")


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The config `python -m experiments OVERRIDES` would run, composed in-process (a notebook, a test, a
    benchmark). Outside the command line Hydra makes no run directory, so give one:
    `train(compose(["model=mlp", "paths.output_dir=outputs/notebook"]))`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


# `${pid:}` keeps the directories of runs started in the same second apart (conf/hydra/default.yaml).
# Cached like Hydra's `${now:}`: a sweep's jobs in other processes (joblib, submitit) inherit the
# launching process's value with the config, so they all land in its sweep directory.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)


def _rules() -> dict[str, Rule]:
    """The keys every run has, whatever it trains. What a component takes it checks itself where the values arrive
    (`rules.require`): the data module its data settings, the net its own, the optimiser builder `optimizer.*`
    (models/optim.py), a schedule and a callback theirs; and Lightning its Trainer's accelerator and precision."""
    return {
        "seed": integer(0),
        "tags": words,
        "notes": text,
        "objective_mode": one_of("max", "min"),
        "label_smoothing": number(0.0, 1.0),
        "compile": boolean,
        "cuda_graphs": boolean,
        "fast_path": boolean,
        "deterministic": boolean,
        "test": boolean,
        "trainer.max_epochs": integer(-1),
        "trainer.max_steps": integer(-1),
        "trainer.benchmark": boolean,
        "trainer.gradient_clip_val": number(0.0),
        "trainer.accumulate_grad_batches": integer(1),
        "trainer.limit_train_batches": batch_limit,
        "trainer.limit_val_batches": batch_limit,
        "trainer.limit_test_batches": batch_limit,
        "trainer.log_every_n_steps": integer(1),
        "trainer.check_val_every_n_epoch": integer(1),
    }


def validate(cfg: DictConfig) -> None:
    """Check the composed config before any data is touched; raise UserError naming the first bad key."""
    for key, check in _rules().items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        allowed = check(value)
        if allowed is not None:
            raise UserError(f"{key}={value!r} is not allowed: it must be {allowed}")
    if cfg.get("compile") and cfg.get("cuda_graphs"):
        raise UserError("compile=true and cuda_graphs=true do not go together: choose one")
    if cfg.get("resume") and cfg.get("init_from"):
        raise UserError("resume= continues a run, init_from= starts a new one from its weights: choose one")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    check_devices(cfg.trainer.accelerator, OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices)


def check_devices(accelerator: str, devices: object) -> None:
    """The accelerator and device count a run asks for exist here: one line instead of Lightning's traceback."""
    import torch

    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise UserError(f"trainer.accelerator={accelerator!r} is not available: no CUDA GPU here; use trainer=cpu")
    if devices == "auto" or devices == -1:
        return
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    available, what = (gpus, "CUDA GPU(s)") if on_gpu else (os.cpu_count() or 1, "CPU core(s) and no CUDA GPU")
    if on_gpu and isinstance(devices, list | tuple):  # Lightning also takes GPU indices, e.g. [0,2]
        if all(is_integer(i) and 0 <= i < gpus for i in devices) and len(set(devices)) == len(devices) > 0:
            return
    elif is_integer(devices) and 1 <= devices <= available:
        return
    raise UserError(
        f"trainer.devices={devices!r} is not available: this machine has {available} {what}; "
        f"choose an integer from 1 to {available}, or auto"
    )
