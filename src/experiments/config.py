"""Where the configs live, the resolvers they use, and the checks that turn bad values into one clear line."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserError


def config_dir() -> Path:
    """`conf/` inside the installed package (a wheel carries it there), else at the top of a source checkout."""
    package = Path(__file__).resolve().parent
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


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(minimum: int, maximum: int | None = None) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        ok = _is_integer(value) and value >= minimum and (maximum is None or value <= maximum)
        return None if ok else f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    return check


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _batch_limit(value: object) -> str | None:
    """Lightning's limit_*_batches: a count of batches, or a fraction of them."""
    ok = (_is_integer(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value <= 1.0)
    return None if ok else "a count of batches (an integer >= 0) or a fraction between 0.0 and 1.0"


def _betas(value: object) -> str | None:
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in value)
    return None if ok else "two numbers >= 0.0 and < 1.0, e.g. [0.9,0.999]"


def _number(low: float, high: float | None = None, low_inclusive: bool = True) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value >= low if low_inclusive else value > low) and (high is None or value < high)
        bounds = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        return None if ok else f"a number {bounds}"

    return check


def _one_of(*choices: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"

    return check


def _positive_integers(value: object) -> str | None:
    ok = isinstance(value, list | tuple) and len(value) > 0 and all(_is_integer(v) and v >= 1 for v in value)
    return None if ok else "a non-empty list of positive integers, e.g. [32,64]"


def _rules() -> dict[str, Callable[[object], str | None]]:
    # Imported here so that `--help` and config errors answer without loading torch.
    from experiments.models.nets import NETS
    from experiments.models.nets.blocks import ACTIVATIONS
    from experiments.models.nets.rnn import CELLS
    from experiments.models.optim import OPTIMIZERS, SCHEDULERS

    metrics = [f"{stage}/{name}" for stage in ("val", "train") for name in ("acc", "f1", "loss")]
    return {
        "seed": _integer(0),
        "objective": _one_of(*metrics),
        "objective_mode": _one_of("max", "min"),
        "label_smoothing": _number(0.0, 1.0),
        "compile": _boolean,
        "cuda_graphs": _boolean,
        "fast_path": _boolean,
        "deterministic": _boolean,
        "test": _boolean,
        "data.batch_size": _integer(1),
        "data.download": _boolean,
        "data.val_size": _number(0.0, 1.0),
        "data.test_size": _number(0.0, 1.0),
        "data.split_seed": _integer(0),
        "data.flip": _boolean,
        "data.translate": _integer(0, 16),
        "data.vocab_size": _integer(3),  # <pad>, <unk> and at least one word
        "data.min_freq": _integer(1),
        "data.seq_len": _integer(1, MAX_SEQ_LEN),
        "trainer.accelerator": _one_of("auto", "cpu", "gpu", "cuda"),
        "trainer.max_epochs": _integer(-1),
        "trainer.max_steps": _integer(-1),
        "trainer.benchmark": _boolean,
        "trainer.precision": _one_of("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"),
        "trainer.gradient_clip_val": _number(0.0),
        "trainer.accumulate_grad_batches": _integer(1),
        "trainer.limit_train_batches": _batch_limit,
        "trainer.limit_val_batches": _batch_limit,
        "trainer.limit_test_batches": _batch_limit,
        "trainer.log_every_n_steps": _integer(1),
        "trainer.check_val_every_n_epoch": _integer(1),
        "model.name": _one_of(*NETS),
        "model.width": _integer(1),
        "model.depth": _integer(0),
        "model.channels": _positive_integers,
        "model.kernel_size": _integer(1),
        "model.convs_per_stage": _integer(1),
        "model.pool": _one_of("max", "avg"),
        "model.cell": _one_of(*CELLS),
        "model.hidden_size": _integer(1),
        "model.num_layers": _integer(1),
        "model.embedding_dim": _integer(1),
        "model.ngrams": _integer(1),
        "model.ngram_buckets": _integer(0),
        "model.activation": _one_of(*ACTIVATIONS),
        "model.dropout": _number(0.0, 1.0),
        "model.batch_norm": _boolean,
        "model.bidirectional": _boolean,
        "model.binary": _boolean,
        "model.naive_bayes": _boolean,
        "model.sparse": _boolean,
        "optimizer.name": _one_of(*OPTIMIZERS),
        "optimizer.lr": _number(0.0, low_inclusive=False),
        "optimizer.weight_decay": _number(0.0),
        "optimizer.momentum": _number(0.0, 1.0),
        "optimizer.nesterov": _boolean,
        "optimizer.betas": _betas,
        "optimizer.norm_lr_scale": _number(0.0, low_inclusive=False),
        "scheduler.name": _one_of(*SCHEDULERS),
        "scheduler.warmup_fraction": _number(0.0, 1.0),
        "scheduler.pct_start": _number(0.0, 1.0, low_inclusive=False),
        "scheduler.anneal": _one_of("cos", "linear"),
        "scheduler.start_fraction": _number(0.0, 1.0, low_inclusive=False),
        "scheduler.end_fraction": _number(0.0, 1.0, low_inclusive=False),
        "scheduler.cycle_momentum": _boolean,
        "callbacks.last_checkpoint.every_n_train_steps": _integer(0),
        "callbacks.last_checkpoint.every_n_epochs": _integer(1),
    }


# Longer than any IMDB review (about 3,000 tokens at most); a typo like seq_len=400000 would allocate gigabytes.
MAX_SEQ_LEN = 10_000


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
    from experiments.models.nets import NETS

    pooling = cfg.model.get("pooling")
    choices = getattr(NETS.get(cfg.model.name), "POOLINGS", ())  # a net with a `pooling` argument lists its choices
    if pooling is not None and pooling not in choices:
        allowed = ", ".join(choices)
        raise UserError(f"model.pooling={pooling!r} is not allowed for model={cfg.model.name}: use one of {allowed}")
    if cfg.model.get("ngrams", 1) > 1 and not cfg.model.get("ngram_buckets"):
        raise UserError(f"model.ngrams={cfg.model.ngrams} needs hash buckets for the n-grams: set model.ngram_buckets")
    if cfg.get("compile") and cfg.get("cuda_graphs"):
        raise UserError("compile=true and cuda_graphs=true do not go together: choose one")
    held_out = cfg.data.get("val_size", 0.0) + cfg.data.get("test_size", 0.0)
    if held_out >= 1.0:
        raise UserError(f"data.val_size + data.test_size = {held_out:g} leaves nothing to train on: keep it below 1")
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
        if all(_is_integer(i) and 0 <= i < gpus for i in devices) and len(set(devices)) == len(devices) > 0:
            return
    elif _is_integer(devices) and 1 <= devices <= available:
        return
    raise UserError(
        f"trainer.devices={devices!r} is not available: this machine has {available} {what}; "
        f"choose an integer from 1 to {available}, or auto"
    )
