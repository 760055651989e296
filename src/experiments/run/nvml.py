"""On a run without a GPU, stop torch asking the NVIDIA driver at every optimiser step whether there is one.

Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1` when it is imported, so that `torch.cuda.is_available()`
answers through NVML rather than by initialising CUDA (a process that initialised CUDA cannot fork
children that use it). torch's optimisers call `is_available()` at every step (to guard CUDA-graph
capture), and with a CUDA build of torch the NVML answer loads and queries the driver library each
time: 0.25 ms per step on a 2-core Xeon without a GPU, a sixth of a small MLP's step. A run on the
CPU never initialises CUDA, so while it trains torch's own check is as safe, and cached; the variable
is put back afterwards for whatever the process does next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@contextmanager
def plain_cuda_checks(device: torch.device) -> Iterator[None]:
    """Within the block, `torch.cuda.is_available()` takes torch's default path unless `device` is a GPU."""
    if device.type == "cuda" or NVML_CHECK not in os.environ:
        yield
        return
    value = os.environ.pop(NVML_CHECK)
    try:
        yield
    finally:
        os.environ[NVML_CHECK] = value
