"""Optimisers and learning-rate schedules from plain config values (conf/optimizer, conf/scheduler)."""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "onecycle", "constant")


class LazySparseRows:
    """Lets torch's Adam and AdamW take sparse gradients (an embedding table built with `sparse=True`).

    Such a parameter gets Adam's update on the rows its batch touched only ("lazy" Adam, as in
    `torch.optim.SparseAdam`); every other parameter gets the parent class's own update. A hashed
    n-gram table has millions of rows and a batch uses a few thousand: a dense update of every row
    each step would cost more than the rest of the step. Sparse rows are never weight-decayed.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        held = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and param.grad.is_sparse:
                    self._update_touched_rows(param, group)
                    held.append((param, param.grad))
                    param.grad = None  # the parent's step skips parameters without a gradient
        super().step()
        for param, grad in held:
            param.grad = grad
        return loss

    def _update_touched_rows(self, param: torch.Tensor, group: dict) -> None:
        grad = param.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        step, (beta1, beta2) = state["step"].item(), group["betas"]
        exp_avg = state["exp_avg"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"][rows], state["exp_avg_sq"][rows] = exp_avg, exp_avg_sq
        denominator = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(group["eps"])
        param.index_add_(0, rows, exp_avg / denominator, alpha=-group["lr"] / (1 - beta1**step))


class Adam(LazySparseRows, torch.optim.Adam):
    """torch's Adam, which also takes sparse embedding gradients."""


class AdamW(LazySparseRows, torch.optim.AdamW):
    """torch's AdamW, which also takes sparse embedding gradients."""


NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def build_optimizer(model: nn.Module, config: dict, fused: bool = True) -> torch.optim.Optimizer:
    """Weight decay applies to weight matrices and kernels only: decaying biases and normalisation
    scales towards zero only hurts (the usual practice since BERT). Tables with sparse gradients are
    not decayed either: their untouched rows could not be, and torch's SGD refuses it.
    `norm_lr_scale` multiplies the learning rate of normalisation layers' shifts and scales (the CIFAR-10
    speedrun trains its BatchNorm shifts 64 times faster than its kernels); only then do they get a group
    of their own, so that checkpoints of runs without it keep their two groups and resume. `fused=False`
    takes torch's multi-tensor (foreach) kernels instead of the single fused one."""
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse}
    norms = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    decayed = {id(p) for p in params if p.ndim > 1} - sparse - norms
    name, lr = config["name"], config["lr"]
    norm_lr_scale = config.get("norm_lr_scale", 1.0)
    apart = norms if norm_lr_scale != 1.0 else set()  # the normalisation parameters, when they train faster
    elsewhere = decayed | apart
    groups = [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": config.get("weight_decay", 0.0)},
        {"params": [p for p in params if id(p) not in elsewhere], "weight_decay": 0.0},
    ]
    if faster := [p for p in params if id(p) in apart]:
        groups.append({"params": faster, "weight_decay": 0.0, "lr": lr * norm_lr_scale})
    if name == "sgd":
        optimizer_class, kwargs = torch.optim.SGD, {"momentum": config.get("momentum", 0.0)}
        kwargs["nesterov"] = config.get("nesterov", False)
        if sparse:  # torch's fused and foreach SGD refuse sparse gradients: its default loop takes them
            return optimizer_class(groups, lr=lr, **kwargs)
    else:
        optimizer_class = {"adamw": AdamW, "adam": Adam}[name]  # sparse rows are updated apart from the rest
        kwargs = {"betas": tuple(config.get("betas", (0.9, 0.999)))}
    if fused:
        try:
            # One fused kernel updates every parameter: on a CPU, torch's default (one Python loop step per
            # tensor) costs a small net a third of its training time; on a GPU, one launch instead of many.
            return optimizer_class(groups, lr=lr, fused=True, **kwargs)
        except RuntimeError:  # a device without fused kernels
            pass
    return optimizer_class(groups, lr=lr, foreach=True, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, config: dict, total_steps: int):
    """A schedule stepped once per batch over `total_steps`, or None for a constant rate."""
    name = config["name"]
    if name == "constant":
        return None
    if name == "onecycle":
        # Up from start_fraction of the peak rate over the first pct_start of the steps, then down to
        # end_fraction of it; `cycle_momentum` moves momentum (or Adam's beta1) the opposite way, 0.95-0.85.
        max_lr = [group["lr"] for group in optimizer.param_groups]
        start, end = config.get("start_fraction", 0.04), config.get("end_fraction", 4e-6)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=total_steps,
            pct_start=config.get("pct_start", 0.25),
            anneal_strategy=config.get("anneal", "cos"),
            div_factor=1 / start,
            final_div_factor=start / end,
            cycle_momentum=config.get("cycle_momentum", True),
        )
    warmup = int(config.get("warmup_fraction", 0.0) * total_steps)

    def warmup_then_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
