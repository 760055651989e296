"""A callback for benchmarks/startup.py: prints the wall-clock time of the first training step."""

from __future__ import annotations

import time

import lightning as L


class FirstStep(L.Callback):
    def __init__(self) -> None:
        self.seen = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self.seen:
            self.seen = True
            print(f"first training step at {time.time():.6f}", flush=True)
