"""A Lightning callback of the user's own, added to a run by a config file (conf/callbacks/diagnostics.yaml)."""

from __future__ import annotations

import lightning as L


class WeightNorms(L.Callback):
    """Log the norm of each weight matrix and kernel of the net after every training epoch: a layer whose
    weights grow or collapse shows in the dashboards before the loss says so."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, parameter in pl_module.net.named_parameters():
            if parameter.ndim > 1:
                pl_module.log(f"weight_norm/{name}", parameter.detach().norm())
