"""What Lightning's hook calls cost a training step, and what the project's three savings on them save.

    python benchmarks/hook_overhead.py                              # the 8-wide MLP at batch 16 (fixed costs)
    python benchmarks/hook_overhead.py experiment=mnist_mlp trainer.limit_train_batches=300   # any overrides

1. Counts, per training step of a real run (synthetic MNIST; the second epoch's calls, its end included,
   over its steps): `trainer.profiler.profile` calls, and reads of a `ModelCheckpoint`'s `state_key`
   (Lightning names the callback by it around each hook call).
2. Per call: Lightning's default profiler against `NoProfiler`; `ModelCheckpoint.state_key` rebuilt
   (Lightning's) against computed once (ours); Lightning's check of `training_step`'s signature without
   and with a precomputed `__signature__`. Median of 7 timings of 20,000 calls.
3. In one run, switching every 10 batches between the project's versions (new) and Lightning's defaults
   (old) for all three: the median time between consecutive batch starts of the second epoch, each
   version's. Fine-grained switching cancels most of the drift of a shared machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

from experiments.core.config import compose
from experiments.core.lightning_internals import FastPath, NoProfiler
from experiments.models.model import FastModel, Model
from experiments.run import recovery
from experiments.run.task import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # synthetic.SyntheticMNIST for `_target_`
DEFAULT = ["data=mnist", "model=mlp", "model.width=8", "model.depth=1", "data.batch_size=16"]
SIGNATURE = FastModel.training_step.__signature__
KEYED_ONCE = recovery.ModelCheckpoint.state_key
REBUILT = property(lambda self: callbacks.ModelCheckpoint.state_key.fget(self))


def use(version: str, trainer: L.Trainer | None = None) -> None:
    """The project's versions of the three (new), or Lightning's defaults (old); the profiler with a trainer."""
    new = version == "new"
    if trainer is not None:
        trainer.profiler = NoProfiler() if new else PassThroughProfiler()
    recovery.ModelCheckpoint.state_key = KEYED_ONCE if new else REBUILT
    if new:
        FastPath.training_step.__signature__ = SIGNATURE
    else:
        vars(FastPath.training_step).pop("__signature__", None)


class Measure(L.Callback):
    """Times the second epoch's steps, switching versions every 10 batches."""

    def __init__(self) -> None:
        self.steps = {"new": [], "old": []}
        self._version, self._last = "new", None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if trainer.current_epoch == 1 and batch_idx > 0:
            self.steps[self._version].append((now - self._last) * 1e3)
        self._version = "new" if (batch_idx // 10) % 2 == 0 else "old"
        use(self._version, trainer)
        self._last = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        use("new", trainer)  # as the project runs, for the per-call timings that follow


def count_calls(overrides: list[str], folder: str) -> dict[str, float]:
    """Calls per step in the second epoch of a short run (the first one's setup calls left out)."""
    counts = {"profile": 0, "state_key": 0, "steps": 0}
    profile, state_key = NoProfiler.profile, KEYED_ONCE.fget

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            counts["steps"] += trainer.current_epoch == 1

    def counted_profile(self, name):
        counts["profile"] += counts["steps"] > 0
        return profile(self, name)

    def counted_key(self):
        counts["state_key"] += counts["steps"] > 0
        return state_key(self)

    NoProfiler.profile, recovery.ModelCheckpoint.state_key = counted_profile, property(counted_key)
    try:
        run(overrides, folder, "count", Count())
    finally:
        NoProfiler.profile, recovery.ModelCheckpoint.state_key = profile, KEYED_ONCE
    return {name: counts[name] / counts["steps"] for name in ("profile", "state_key")}


def run(overrides: list[str], folder: str, name: str, callback: L.Callback) -> None:
    # The callback, handed to the run's config as a module-level factory Hydra can locate.
    sys.modules["__hook_overhead__"] = type(sys)("__hook_overhead__")
    sys.modules["__hook_overhead__"].callback = lambda: callback
    train(
        compose(
            [
                *overrides,
                "data._target_=synthetic.SyntheticMNIST",
                "trainer.accelerator=cpu",
                "trainer.max_epochs=2",
                "trainer.limit_val_batches=2",
                "test=false",
                "callbacks.last_checkpoint.every_n_train_steps=0",  # no mid-epoch saves in the timed epoch
                "+callbacks.measure._target_=__hook_overhead__.callback",
                f"paths.output_dir={folder}/{name}",
            ]
        )
    )


def per_call_us(function, calls: int = 20_000) -> float:
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def main() -> None:
    torch.set_num_threads(1)
    overrides = sys.argv[1:] or [*DEFAULT, "trainer.limit_train_batches=1000"]
    with tempfile.TemporaryDirectory() as folder:
        counts = count_calls(overrides, folder)
        measure = Measure()
        run(overrides, folder, "switch", measure)
    print(
        f"per step (the second epoch's calls, its end included, over its steps): {counts['profile']:.0f} profiler "
        f"contexts, {counts['state_key']:.0f} checkpoint state keys"
    )

    lightnings, ours = PassThroughProfiler(), NoProfiler()

    def enter_and_leave(profiler):
        def call():
            with profiler.profile("[Callback]ModelCheckpoint.on_train_batch_end"):
                pass

        return call

    checkpoint = recovery.ModelCheckpoint(dirpath="unused", monitor="val/acc", mode="max")
    model = Model(
        {"kind": "image", "shape": [1, 28, 28], "num_classes": 10}, {"_target_": "experiments.models.nets.MLP"}, {}, {}
    )
    signature_check = lambda: is_param_in_hook_signature(model.training_step, "batch_idx", min_args=2)  # noqa: E731
    use("old")
    signature_rebuilt = per_call_us(signature_check)
    use("new")
    rows = [
        ("profiler context", per_call_us(enter_and_leave(lightnings)), per_call_us(enter_and_leave(ours))),
        (
            "checkpoint state key",
            per_call_us(lambda: REBUILT.fget(checkpoint)),
            per_call_us(lambda: checkpoint.state_key),
        ),
        ("training_step signature check", signature_rebuilt, per_call_us(signature_check)),
    ]
    for name, old_us, new_us in rows:
        print(f"{name:30s} Lightning's {old_us:6.2f} us   the project's {new_us:6.2f} us a call")

    new, old = (statistics.median(measure.steps[v]) for v in ("new", "old"))
    sizes = ", ".join(f"{len(measure.steps[v])} {v}" for v in ("new", "old"))
    print(
        f"time per step, in one run switching every 10 batches ({sizes} steps): the project's {new:.3f} ms, "
        f"with Lightning's defaults {old:.3f} ms, saved {old - new:.3f} ms ({(old - new) / old:.1%})"
    )


if __name__ == "__main__":
    main()
