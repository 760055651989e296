"""Fine-tuning a pretrained net: its `backbone` frozen for the first epochs, then trained at a lower learning rate
than its head. Lightning's `BackboneFinetuning`, pointed at the net (`pl_module.net.backbone`, as
`model=torchvision` has it) rather than at the LightningModule.

    callbacks.backbone_finetuning.freeze_epochs=2         # the head alone for 2 epochs (0: no freezing)
    callbacks.backbone_finetuning.backbone_lr_ratio=0.1   # then the backbone at a tenth of the head's rate

When the backbone is unfrozen it joins the optimiser as a parameter group of its own, and the run's schedule (cosine,
one-cycle, plateau, ...) from then on sets its rate to `backbone_lr_ratio` times the head's. Frozen, its batch-norm
layers still train (Lightning's `train_bn`), so their statistics adapt to the new images.
"""

from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.callbacks import BackboneFinetuning as LightningBackboneFinetuning
from lightning.pytorch.callbacks.finetuning import BaseFinetuning
from torch import nn
from torch.optim import Optimizer, lr_scheduler

from experiments.core.errors import UserError
from experiments.core.rules import boolean, integer, number, require


class BackboneFinetuning(LightningBackboneFinetuning):
    def __init__(self, freeze_epochs: int = 1, backbone_lr_ratio: float = 0.1, train_bn: bool = True) -> None:
        require(
            "callbacks.backbone_finetuning",
            freeze_epochs=(freeze_epochs, integer(0)),
            backbone_lr_ratio=(backbone_lr_ratio, number(0.0, low_inclusive=False)),
            train_bn=(train_bn, boolean),
        )
        super().__init__(
            unfreeze_backbone_at_epoch=freeze_epochs,
            backbone_initial_ratio_lr=backbone_lr_ratio,
            should_align=True,
            train_bn=train_bn,
        )
        self.freeze_epochs = freeze_epochs

    @staticmethod
    def backbone(pl_module: L.LightningModule) -> nn.Module:
        backbone = getattr(getattr(pl_module, "net", None), "backbone", None)
        if not isinstance(backbone, nn.Module):
            net = type(getattr(pl_module, "net", pl_module)).__name__
            raise UserError(
                f"callbacks.backbone_finetuning: {net} has no `backbone` to freeze; "
                "set callbacks.backbone_finetuning=null, or use a net with one (model=torchvision)"
            )
        return backbone

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.backbone(pl_module)  # one line now, not at the first epoch
        resumed = self._restarting  # Lightning puts back the backbone's group a run had when it stopped
        groups = [len(optimizer.param_groups) for optimizer in trainer.optimizers]
        BaseFinetuning.on_fit_start(self, trainer, pl_module)
        if resumed and [len(optimizer.param_groups) for optimizer in trainer.optimizers] != groups:
            # It had unfrozen the backbone, which `freeze_before_training` froze again at this fit's setup.
            self.make_trainable(self.backbone(pl_module))
            for config in trainer.lr_scheduler_configs:
                rejoin_schedule(config.scheduler, config.scheduler.optimizer)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.freeze_epochs > 0:
            self.freeze(self.backbone(pl_module), train_bn=self.train_bn)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.freeze_epochs == 0 or epoch != self.unfreeze_backbone_at_epoch:
            return
        ratio, head = self.backbone_initial_ratio_lr, optimizer.param_groups[0]
        self.previous_backbone_lr = head["lr"] * ratio
        with warnings.catch_warnings():  # its batch-norm layers trained while frozen (train_bn): already in a group
            warnings.filterwarnings("ignore", message="The provided params to be frozen already exist")
            backbone = self.backbone(pl_module)
            lr, train_bn = self.previous_backbone_lr, self.train_bn
            self.unfreeze_and_add_param_group(backbone, optimizer, lr=lr, initial_denom_lr=1.0, train_bn=train_bn)
        backbone = optimizer.param_groups[-1]
        backbone["initial_lr"] = head.get("initial_lr", head["lr"]) * ratio
        for config in pl_module.trainer.lr_scheduler_configs:
            follow_schedule(config.scheduler, optimizer, ratio)


def follow_schedule(schedule, optimizer: Optimizer, ratio: float) -> None:
    """The parameter group just added to `optimizer` (the backbone's) follows the run's schedule at `ratio` times the
    head's rate: a schedule built for the groups there were refuses one more (torch zips them strictly)."""
    group, head = optimizer.param_groups[-1], optimizer.param_groups[0]
    if isinstance(schedule, lr_scheduler.ReduceLROnPlateau):
        schedule.min_lrs.append(schedule.min_lrs[0] * ratio)
    else:
        if isinstance(schedule, lr_scheduler.OneCycleLR):
            for key in ("initial_lr", "max_lr", "min_lr"):
                group[key] = head[key] * ratio
            for key in ("betas", "momentum", "max_momentum", "base_momentum"):
                if key in head:
                    group[key] = head[key]
        elif hasattr(schedule, "lr_lambdas"):
            schedule.lr_lambdas.append(schedule.lr_lambdas[0])
        elif not hasattr(schedule, "base_lrs"):
            name = type(schedule).__name__
            raise UserError(f"callbacks.backbone_finetuning cannot add the backbone to the schedule {name}")
        schedule.base_lrs.append(group["initial_lr"])
    if hasattr(schedule, "_last_lr"):
        schedule._last_lr.append(group["lr"])


def rejoin_schedule(schedule, optimizer: Optimizer) -> None:
    """A resumed run's schedule, built for the groups its optimiser had at the start, given the backbone's group
    that the fine-tuning put back (the values the group needs come with the schedule's and the optimiser's saved
    states; here only the lists that must have one entry a group)."""
    groups = len(optimizer.param_groups)
    lists = [schedule.min_lrs] if isinstance(schedule, lr_scheduler.ReduceLROnPlateau) else [schedule.base_lrs]
    lists += [getattr(schedule, name) for name in ("lr_lambdas", "_last_lr") if hasattr(schedule, name)]
    for values in lists:
        values.extend(values[:1] * (groups - len(values)))
