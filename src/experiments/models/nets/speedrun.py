"""A CIFAR-10 speedrun net, built from the published techniques of the airbench94 recipe (Jordan, 2024,
"94% on CIFAR-10 in 3.29 seconds on a single GPU"): our own code, not a copy.

- The first layer whitens 2x2 patches: its filters are the eigenvectors of the patch covariance of the
  first training batch, scaled by 1/sqrt(eigenvalue), each with its negative (so a GELU keeps both
  signs). It is frozen; the rest of the net starts on decorrelated, unit-variance input.
- Three groups of conv-pool-BN-GELU-conv-BN-GELU; every convolution starts as an identity on its first
  input channels (Dirac), so the untrained net passes its input through and learns corrections.
- BatchNorm with a high momentum (running statistics follow the fast-changing early net), a tiny eps,
  and its scale frozen at 1: only the shift is learned. It stays in float32 when the net is cast to 16
  bits (`trainer.precision=bf16-true`), as the recipe's own half-precision net keeps it.
- Global max pooling and a linear head whose logits are scaled down (they start small, not confident).
- In eval mode, test-time augmentation: the mean of the logits of the image and its mirror, and of
  both shifted by one pixel each way (the shifted pairs weighted half).
The schedule, label smoothing, lookahead, alternating flips and translations live in the recipe
(conf/experiment/cifar10_speedrun.yaml), not here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from experiments.core.errors import UserError
from experiments.core.rules import boolean, number, positive_integers, require
from experiments.data.contract import output_size


def dirac_init(conv: nn.Conv2d) -> None:
    """Identity on the first min(in, out) channels, the default random init elsewhere."""
    n = min(conv.in_channels, conv.out_channels)
    torch.nn.init.dirac_(conv.weight.data[:n])


class FloatBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose parameters and running statistics stay float32 when the net is cast to 16 bits.

    A 16-bit running variance or shift would round away the small updates late in training (and an eps
    of 1e-12 is zero in fp16); the kernels normalise 16-bit inputs with float32 parameters directly and
    return 16-bit outputs, so the rest of the net keeps its 16-bit speed."""

    def _apply(self, fn, recurse: bool = True):
        def keep_float(tensor: torch.Tensor) -> torch.Tensor:
            converted = fn(tensor)
            return converted.float() if converted.dtype in (torch.float16, torch.bfloat16) else converted

        return super()._apply(keep_float, recurse)


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float, pool: bool = True) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding="same", bias=False)
        self.norm1, self.norm2 = (FloatBatchNorm(out_channels, eps=1e-12, momentum=bn_momentum) for _ in range(2))
        for conv in (self.conv1, self.conv2):
            dirac_init(conv)
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)  # the scale stays 1: only the shift learns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.norm1(F.max_pool2d(x, 2) if self.pool else x)
        return F.gelu(self.norm2(self.conv2(F.gelu(x))))


class SpeedrunNet(nn.Module):
    def __init__(
        self,
        spec: dict,
        widths: list[int] = (64, 256, 256),
        bn_momentum: float = 0.4,  # PyTorch's convention: the weight of the new batch
        logit_scale: float = 1 / 9,
        tta: bool = True,
    ) -> None:
        super().__init__()
        require(
            "model",
            widths=(widths, positive_integers),
            bn_momentum=(bn_momentum, number(0.0, 1.0)),
            logit_scale=(logit_scale, number(0.0, low_inclusive=False)),
            tta=(tta, boolean),
        )
        if spec["kind"] != "image":
            raise UserError(
                f"model=speedrun is a net for images; choose model=mlp for a {spec['kind']} (or cnn, rnn for text)"
            )
        channels = spec["shape"][0]
        patch = channels * 2 * 2
        self.whiten = nn.Conv2d(channels, 2 * patch, kernel_size=2, bias=True)
        self.whiten.requires_grad_(False)
        self.register_buffer("whitened", torch.tensor(False))  # saved: a reloaded net is not re-fitted
        # The buffer is read once, not at every step (on a GPU each read would wait for the device);
        # loading a state dict may change it, so loading forgets what was read.
        self._whitened_read: bool | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_whitened_read", None))
        groups, width, size = [], 2 * patch, min(spec["shape"][1:]) - 1  # the 2x2 patches shrink it by one
        for out in widths:
            groups.append(ConvGroup(width, out, bn_momentum, pool=size >= 2))  # small images keep 1 pixel
            width, size = out, max(size // 2, 1)
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(width, output_size(spec), bias=False)
        self.logit_scale, self.tta = logit_scale, tta

    @torch.no_grad()
    def fit_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen first layer from the 2x2 patches of `x` (summed over processes under DDP)."""
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.whiten.in_channels * 4).double()
        moments = torch.cat([patches.sum(0), (patches.T @ patches).flatten(), patches.new_tensor([len(patches)])])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(moments)  # every process must end with the same frozen layer
        size = patches.shape[1]
        n = moments[-1]
        mean = moments[:size] / n
        covariance = moments[size:-1].view(size, size) / n - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]  # one decorrelating filter per row
        filters = torch.cat([filters, -filters])
        self.whiten.weight.copy_(filters.view_as(self.whiten.weight).to(self.whiten.weight))
        self.whiten.bias.copy_((-filters @ mean).to(self.whiten.bias))  # centred: zero mean output
        self.whitened.fill_(True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(x.amax(dim=(2, 3))) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._whitened_read:
            if not self.whitened:
                self.fit_whitening(x)
            self._whitened_read = True
        if self.training or not self.tta:
            return self.logits(x)
        mirrored = torch.cat([x, x.flip(3)])
        padded = F.pad(mirrored, (1, 1, 1, 1), mode="reflect")
        height, width = x.shape[2:]
        shifted = torch.cat([padded[..., :height, :width], padded[..., 2:, 2:]])  # up-left, down-right
        n = len(x)
        plain = self.logits(mirrored).view(2, n, -1).mean(0)
        moved = self.logits(shifted).view(4, n, -1).mean(0)
        return 0.5 * plain + 0.5 * moved
