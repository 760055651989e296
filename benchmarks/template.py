"""The common template path, for comparison: a torchvision-style per-sample Dataset, a DataLoader that
collates one sample at a time, and a LightningModule that logs and updates its metrics on every step.

It is written here in the manner of the widespread Lightning + Hydra template (its MNIST example): PIL
images through `ToTensor` and `Normalize`, torchmetrics `Accuracy` and `MeanMetric`, `self.log` per step
with epoch aggregation, `num_workers=0`, Adam-family optimiser with its default implementation.
"""

from __future__ import annotations

import tempfile

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision import transforms

from experiments.models.nets import build_net
from experiments.reporting.callbacks import Throughput


class PerSampleImages(Dataset):
    """One PIL image per `__getitem__`, as torchvision's MNIST and CIFAR10 datasets hand them out."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).squeeze(3).numpy()  # HW or HWC, as PIL wants them
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


class PerSampleTokens(Dataset):
    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        self.tokens, self.labels = tokens, labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.tokens[index].long(), self.labels[index]


class TemplateModule(L.LightningModule):
    def __init__(self, net: torch.nn.Module, num_classes: int, optimizer: dict) -> None:
        super().__init__()
        self.net, self.optimizer = net, optimizer
        self.criterion = torch.nn.CrossEntropyLoss()
        self.train_acc, self.val_acc = MulticlassAccuracy(num_classes), MulticlassAccuracy(num_classes)
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        logits = self.net(x)
        loss = self.criterion(logits, y)
        self.train_loss(loss)
        self.train_acc(logits, y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.val_loss(self.criterion(logits, y))
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        # torch's own class of the name (ours only adds sparse gradients), as a template would write it
        optimizer_class = getattr(torch.optim, self.optimizer["_target_"].rsplit(".", 1)[-1])
        kwargs = {"lr": self.optimizer["lr"], "weight_decay": self.optimizer.get("weight_decay", 0.0)}
        return optimizer_class(self.parameters(), **kwargs)


def loaders(data, batch_size: int) -> tuple[DataLoader, DataLoader]:
    (x, y), (val_x, val_y) = data.splits["train"], data.splits["val"]
    if data.spec["kind"] == "text":
        train_set, val_set = PerSampleTokens(x, y), PerSampleTokens(val_x, val_y)
    else:
        # ToTensor maps pixels 0..255 to 0..1; the DataModule's mean and std are in 0..255 units
        normalize = transforms.Normalize([m / 255 for m in data.mean], [s / 255 for s in data.std])
        augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if x.shape[1] == 3 else []
        train_set = PerSampleImages(x, y, transforms.Compose([*augment, transforms.ToTensor(), normalize]))
        val_set = PerSampleImages(val_x, val_y, transforms.Compose([transforms.ToTensor(), normalize]))
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=0),
        DataLoader(val_set, batch_size=batch_size, num_workers=0),
    )


def template_throughput(cfg, data, device: str, precision: str, steps: int) -> float:
    """Samples/s over the training steps of a second epoch of `steps` batches (the first is warm-up)."""
    net = build_net(dict(cfg.model), data.spec)
    model = TemplateModule(net, data.spec["num_classes"], dict(cfg.optimizer))
    throughput = Throughput()
    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(
            accelerator=device,
            devices=1,
            precision=precision,
            max_epochs=2,
            limit_train_batches=steps,
            limit_val_batches=2,
            num_sanity_val_steps=0,
            enable_progress_bar=False,  # generous: its bar would cost it more
            enable_model_summary=False,
            callbacks=[throughput],
            default_root_dir=folder,
        )
        trainer.fit(model, *loaders(data, cfg.data.batch_size))
    return throughput.samples_per_second
