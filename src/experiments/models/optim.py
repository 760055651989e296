"""Optimisers and learning-rate schedules from plain config values (conf/optimizer, conf/scheduler)."""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "onecycle", "constant")


def build_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    """Weight decay applies to weight matrices and kernels only: decaying biases and normalisation
    scales towards zero only hurts (the usual practice since BERT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": config.get("weight_decay", 0.0)},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    name, lr = config["name"], config["lr"]
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=config.get("momentum", 0.0), nesterov=config.get("nesterov", False)
        )
    betas = tuple(config.get("betas", (0.9, 0.999)))
    optimizer_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[name]
    return optimizer_class(groups, lr=lr, betas=betas)


def build_scheduler(optimizer: torch.optim.Optimizer, config: dict, total_steps: int):
    """A schedule stepped once per batch over `total_steps`, or None for a constant rate."""
    name = config["name"]
    if name == "constant":
        return None
    if name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=config.get("pct_start", 0.25)
        )
    warmup = int(config.get("warmup_fraction", 0.0) * total_steps)

    def warmup_then_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
