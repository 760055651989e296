"""A net's training forward and backward replayed as CUDA graphs (`cuda_graphs=true`).

A small net on a fast GPU runs out of host time before GPU time: launching the CIFAR-10 speedrun net's
150-odd kernels of a step one by one from Python takes longer than the H100 takes to run them. A CUDA
graph records the kernels of the forward and of the backward once and replays each with one launch
(`torch.cuda.make_graphed_callables`); the loss, the optimiser and everything else stay as they are.

A graph replays fixed shapes on fixed memory: it serves the training batches of the size it was
recorded with (all but an epoch's last, smaller one, which runs eagerly), on the parameters it was
recorded on (optimiser steps and loaded checkpoints change them in place, which it sees). It is
recorded at the first full-size training batch of each fit (a run resumed just before an epoch's last
batch starts with a smaller one), on the running net; the recording runs the net a few
times in training mode, so the normalisation layers' running statistics and the GPU's random state
(dropout draws from it) are put back afterwards: the run then goes on exactly as it would eagerly, and
a resumed run as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from experiments.core.errors import UserError, first_line


class GraphedTraining:
    """`net(x)` for training batches, replayed from a CUDA graph recorded at the first full-size one.

    Any other batch shape, and the net in eval mode, run eagerly (a training split smaller than one
    batch is never recorded). `batch_size`: the size of a full training batch, the one recorded (None:
    whatever the first training batch has). `record` is `torch.cuda.make_graphed_callables`, or a
    stand-in for the tests on a CPU.
    """

    def __init__(
        self, net: nn.Module, batch_size: int | None = None, record: Callable = torch.cuda.make_graphed_callables
    ) -> None:
        self.net = net
        self.batch_size = batch_size
        self.record = record
        self.graphed: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.shape: torch.Size | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.net.training:  # evaluation (the sanity check comes first): never recorded
            return self.net(x)
        if self.graphed is None and self.batch_size in (None, len(x)):
            self._record(x)
        return self.graphed(x) if x.shape == self.shape else self.net(x)  # (no shape before the recording)

    def _record(self, x: torch.Tensor) -> None:
        statistics = [
            (buffer, buffer.clone())
            for module in self.net.modules()
            if isinstance(module, nn.modules.batchnorm._NormBase)
            for buffer in module.buffers(recurse=False)
        ]
        random_state = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
        try:
            self.record(self.net, (x.detach().clone(),))
        except RuntimeError as error:
            # Only what the capture refuses (a host sync in the net's step, as sparse gradients make) is the
            # user's to switch off; running out of memory, or a bug in the net, stays an error with its traceback.
            if "captur" not in str(error) or isinstance(error, torch.OutOfMemoryError):
                raise
            reason = first_line(str(error))
            raise UserError(
                f"cuda_graphs=true: this net cannot be recorded as a CUDA graph ({reason}); "
                "train it with cuda_graphs=false"
            ) from error
        # make_graphed_callables made `net.forward` the graph; the module keeps its own forward (for
        # the other shapes and for evaluation), the graph is called from here.
        self.graphed, self.shape = self.net.forward, x.shape
        del self.net.forward
        with torch.no_grad():
            for buffer, saved in statistics:
                buffer.copy_(saved)
        if random_state is not None:  # the warm-up's dropout drew numbers the run must still draw
            torch.cuda.set_rng_state(random_state, x.device)


def graphed_training_for(net: nn.Module, trainer) -> GraphedTraining | None:
    """The graphed net for a fit on one GPU, recording batches of the data module's size; None on a CPU and
    under data parallelism (recording with its gradient hooks and warm-up is not covered here)."""
    if trainer.strategy.root_device.type != "cuda" or trainer.world_size != 1:
        return None
    return GraphedTraining(net, batch_size=getattr(trainer.datamodule, "batch_size", None))
