"""Optimisers and learning-rate schedules from plain config values (conf/optimizer, conf/scheduler).

Both are named by `_target_` and built by core/build.py: any `torch.optim` optimiser or schedule, or one's own
(docs/extending.md). The optimiser gets our parameter groups (no weight decay on biases and normalisation
weights) and torch's fused kernels when it has them; a schedule whose constructor takes `total_steps` gets the
run's. Both are built once, when Lightning asks the module for them (`configure_optimizers`); at start,
`check_optimizer` and `check_scheduler` check everything that can be known without building them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.core.build import Component, component
from experiments.core.errors import UserError
from experiments.core.rules import betas, boolean, checks, number, one_of, require

# The optimiser group's values, whatever the class: ours (lr, weight_decay, norm_lr_scale) and the common ones of
# torch's optimisers, which refuse the same values in their constructors, but only once training starts (after
# the run wrote its first files); a key the config lacks is not checked (the class's default, or no such argument).
OPTIMIZER_RULES = {
    "lr": number(0.0, low_inclusive=False),
    "weight_decay": number(0.0),
    "momentum": number(0.0, 1.0),
    "nesterov": boolean,
    "betas": betas,
    "eps": number(0.0),
    "norm_lr_scale": number(0.0, low_inclusive=False),
}

# Settings of ours in the optimiser group that go into its parameter groups, not to the optimiser class.
GROUP_KEYS = ("weight_decay", "norm_lr_scale")

# How Lightning steps a schedule, not arguments of the schedule itself: taken out before it is built.
LIGHTNING_KEYS = ("interval", "frequency", "monitor", "strict")


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


def parameter_groups(model: nn.Module, config: dict) -> list[dict]:
    """Weight decay applies to weight matrices and kernels only: decaying biases and normalisation
    scales towards zero only hurts (the usual practice since BERT). Tables with sparse gradients are
    not decayed either: their untouched rows could not be, and torch's SGD refuses it.
    `norm_lr_scale` multiplies the learning rate of normalisation layers' shifts and scales (the CIFAR-10
    speedrun trains its BatchNorm shifts 64 times faster than its kernels); only then do they get a group
    of their own, so that checkpoints of runs without it keep their two groups and resume."""
    weight_decay, norm_lr_scale = config.get("weight_decay", 0.0), config.get("norm_lr_scale", 1.0)
    sparse = {id(p) for p in sparse_tables(model)}
    norms = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    decayed = {id(p) for p in params if p.ndim > 1} - sparse - norms
    apart = norms if norm_lr_scale != 1.0 else set()  # the normalisation parameters, when they train faster
    elsewhere = decayed | apart
    groups = [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in elsewhere], "weight_decay": 0.0},
    ]
    if faster := [p for p in params if id(p) in apart]:
        groups.append({"params": faster, "weight_decay": 0.0, "lr": config["lr"] * norm_lr_scale})
    return groups


def sparse_tables(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse]


def planned_optimizer(model: nn.Module, config: dict) -> tuple[Component, list[dict]]:
    """The optimiser `config` names, not built: its values checked (`OPTIMIZER_RULES`), its class imported, and the
    parameter groups of `model` it is to be built with."""
    given = [key for key in OPTIMIZER_RULES if key in config or key == "lr"]  # lr has no default: always checked
    require("optimizer", **{key: (config.get(key), OPTIMIZER_RULES[key]) for key in given})
    if config.get("nesterov") and not (config.get("momentum", 0.0) > 0 and config.get("dampening", 0.0) == 0):
        raise UserError("optimizer.nesterov=true needs optimizer.momentum > 0 and no dampening; or set nesterov=false")
    optimizer = component(config, "optimizer", torch.optim.Optimizer).without(*GROUP_KEYS)
    if "betas" in optimizer.settings:  # a config's list; torch's fused kernels want the tuple
        optimizer = optimizer.with_settings(betas=tuple(optimizer.settings["betas"]))
    return optimizer, parameter_groups(model, config)


def check_optimizer(model: nn.Module, config: dict) -> int:
    """Everything about the optimiser that can be known without building it: its values, its class, its arguments.
    Returns the number of its parameter groups (what a checkpoint it resumes from must have)."""
    optimizer, groups = planned_optimizer(model, config)
    optimizer.check(groups)
    return len(groups)


def build_optimizer(model: nn.Module, config: dict, fused: bool = True) -> torch.optim.Optimizer:
    """The optimiser for `model`'s parameters (`parameter_groups`), with torch's fused kernels when the class
    has them; `fused=False` takes torch's multi-tensor (foreach) kernels instead of the single fused one."""
    optimizer, groups = planned_optimizer(model, config)
    # torch's fused and foreach kernels refuse sparse gradients; our Adam and AdamW update those rows apart.
    if sparse_tables(model) and not issubclass(optimizer.target, LazySparseRows):
        return optimizer.build(groups)
    if fused and "fused" in optimizer.parameters:
        try:
            # One fused kernel updates every parameter: on a CPU, torch's default (one Python loop step per
            # tensor) costs a small net a third of its training time; on a GPU, one launch instead of many.
            return optimizer.build(groups, fused=True)
        except RuntimeError:  # a device without fused kernels
            pass
    if "foreach" in optimizer.parameters:
        return optimizer.build(groups, foreach=True)
    return optimizer.build(groups)


def planned_scheduler(config: dict) -> tuple[Component | None, dict]:
    """The schedule `config` names, not built, and how Lightning is to step it (`interval` and the others of
    LIGHTNING_KEYS; every batch unless it says otherwise); no schedule for a config with no `_target_`."""
    if not config.get("_target_"):
        return None, {}
    schedule = component(config, "scheduler")
    stepping = {
        "interval": "step",
        **{key: schedule.settings[key] for key in LIGHTNING_KEYS if key in schedule.settings},
    }
    return schedule.without(*LIGHTNING_KEYS), stepping


def check_scheduler(config: dict) -> None:
    """Everything about the schedule that can be known without building it (which needs the optimiser): its
    target, that its arguments bind, and its declared rules (core/rules.py `checks`)."""
    schedule, _ = planned_scheduler(config)
    if schedule is not None:
        schedule.check(None, **run_length(schedule, total_steps=1))


def build_scheduler(optimizer: torch.optim.Optimizer, config: dict, total_steps: int) -> dict | None:
    """The schedule as Lightning's `lr_scheduler` entry, or None for a constant rate (a config with no `_target_`)."""
    schedule, stepping = planned_scheduler(config)
    if schedule is None:
        return None
    return {"scheduler": schedule.build(optimizer, **run_length(schedule, total_steps)), **stepping}


def run_length(schedule: Component, total_steps: int) -> dict:
    """`total_steps`, for a schedule whose constructor takes it."""
    return {"total_steps": total_steps} if "total_steps" in schedule.parameters else {}


@checks("scheduler", warmup_fraction=number(0.0, 1.0))
def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up over the first `warmup_fraction` of the steps, then a cosine decay to zero."""
    warmup = int(warmup_fraction * total_steps)

    def warmup_then_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)


@checks(
    "scheduler",
    pct_start=number(0.0, 1.0, low_inclusive=False),
    anneal=one_of("cos", "linear"),
    start_fraction=number(0.0, 1.0, low_inclusive=False),
    end_fraction=number(0.0, 1.0, low_inclusive=False),
    cycle_momentum=boolean,
)
def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    pct_start: float = 0.25,
    anneal: str = "cos",
    start_fraction: float = 0.04,
    end_fraction: float = 4e-6,
    cycle_momentum: bool = True,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """Smith's one-cycle policy, its rates as fractions of each group's own: up from `start_fraction` over the
    first `pct_start` of the steps, then down to `end_fraction`; `cycle_momentum` moves momentum (or Adam's
    beta1) the opposite way, 0.95-0.85."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal,
        div_factor=1 / start_fraction,
        final_div_factor=start_fraction / end_fraction,
        cycle_momentum=cycle_momentum,
    )
