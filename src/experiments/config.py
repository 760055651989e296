"""Where the configs live, the resolvers they use, and the checks that turn bad input into one clear line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """`conf/` inside the installed package (a wheel carries it there), else at the top of a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml inside {package} or at the top of its source checkout")


# `${pid:}` keeps the directories of runs started in the same second apart (conf/hydra/default.yaml).
# Cached like Hydra's `${now:}`: a sweep's jobs in other processes (joblib, submitit) inherit the
# launching process's value with the config, so they all land in its sweep directory.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)


class UserError(Exception):
    """Bad input from the user: reported as one line with exit code 2, never as a traceback."""


def _integer(minimum: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"an integer >= {minimum}"

    return check


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


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _positive_integers(value: object) -> str | None:
    ok = isinstance(value, list | tuple) and len(value) > 0
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
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
        "data.batch_size": _integer(1),
        "trainer.max_epochs": _integer(-1),
        "trainer.precision": _one_of("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"),
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
        "optimizer.name": _one_of(*OPTIMIZERS),
        "optimizer.lr": _number(0.0, low_inclusive=False),
        "optimizer.weight_decay": _number(0.0),
        "optimizer.momentum": _number(0.0, 1.0),
        "scheduler.name": _one_of(*SCHEDULERS),
        "scheduler.warmup_fraction": _number(0.0, 1.0),
        "scheduler.pct_start": _number(0.0, 1.0, low_inclusive=False),
    }


def _poolings() -> dict[str, tuple[str, ...]]:
    from experiments.models.nets import mlp, rnn

    return {"mlp": mlp.POOLINGS, "rnn": rnn.POOLINGS, "cnn": (), "speedrun": ()}


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
    pooling = cfg.model.get("pooling")
    if pooling is not None and pooling not in (choices := _poolings()[cfg.model.name]):
        allowed = ", ".join(choices)
        raise UserError(f"model.pooling={pooling!r} is not allowed for model={cfg.model.name}: use one of {allowed}")
    if cfg.model.get("ngrams", 1) > 1 and not cfg.model.get("ngram_buckets"):
        raise UserError(f"model.ngrams={cfg.model.ngrams} needs hash buckets for the n-grams: set model.ngram_buckets")
