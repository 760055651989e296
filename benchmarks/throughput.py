"""Steady-state training throughput: the project's path against a plain PyTorch loop and the template path.

    python benchmarks/throughput.py                          # CPU, the three workloads, synthetic data
    python benchmarks/throughput.py --device cuda            # on a GPU (bf16 where supported, as a run would)
    python benchmarks/throughput.py --workloads mnist_mlp --rounds 7 --data-dir data   # real files if there
    python benchmarks/throughput.py --workloads mnist_mlp data.batch_size=256          # any config override
    python benchmarks/throughput.py --workloads mnist_mlp_small --paths abcd           # and Lightning's floor
    python benchmarks/throughput.py --workloads loop_overhead --paths abd              # the fixed cost of a step

In one process, each round measures the paths one after another on the same net, batch size,
optimiser and data, and each measurement is the second epoch of `steps` batches (the first is warm-up):
  (a) project   `experiments.run.task.train` with the recipe's config: the real Model, DataModule,
                Trainer, default callbacks and TensorBoard logger, exactly what `python -m experiments`
                runs; its figure is the one the run writes to metrics.json (`samples_per_second`).
  (b) plain     a hand-written PyTorch loop: the same net, optimiser and schedule from the project's
                builders, inputs normalised once and resident on the device, a random permutation per
                epoch, the recipe's augmentation on the device (CIFAR-10); no Lightning.
  (c) template  a torchvision-style per-sample Dataset and DataLoader feeding a LightningModule that logs
                and updates torchmetrics every step (benchmarks/template.py).
  (d) bare      (on request) (b)'s parts in a bare LightningModule and Trainer: no callbacks, logger,
                progress bar, checkpoints or validation; what Lightning's own step costs, before ours.
The table gives the median samples/s of each path over the rounds, and the median of the per-round
ratios (a)/(b), (a)/(c) and (d)/(b): pairing within a round cancels most of the drift on a shared machine.
Without the dataset's files under --data-dir, the project's own DataModules are filled with random data
of the real shapes and sizes (benchmarks/synthetic.py); the figures do not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.core.config import compose
from experiments.run.nvml import plain_cuda_checks

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's helpers, for `_target_` too

# name: (overrides a user would type, synthetic DataModule, batches per timed epoch on cpu / on cuda)
WORKLOADS = {
    "mnist_mlp": (["experiment=mnist_mlp"], "synthetic.SyntheticMNIST", {"cpu": 40, "cuda": None}),
    # About the size of the template's own MNIST net (784-64-128-64-10): a step is mostly fixed costs.
    "mnist_mlp_small": (
        ["data=mnist", "model=mlp", "model.width=64", "model.depth=3"],
        "synthetic.SyntheticMNIST",
        {"cpu": 200, "cuda": None},
    ),
    # A net so small that a step is nearly all fixed cost: what the training loop itself costs per step.
    "loop_overhead": (
        ["data=mnist", "model=mlp", "model.width=8", "model.depth=1", "data.batch_size=16"],
        "synthetic.SyntheticMNIST",
        {"cpu": 400, "cuda": None},
    ),
    "cifar_cnn": (["data=cifar10", "model=cnn"], "synthetic.SyntheticCIFAR10", {"cpu": 20, "cuda": None}),
    "imdb_rnn": (["data=imdb", "model=rnn"], "synthetic.SyntheticIMDB", {"cpu": 10, "cuda": None}),
}
# On a GPU the CIFAR-10 CNN is the reference size: 64/256/256 channels at batch 512.
CUDA_OVERRIDES = {"cifar_cnn": ["model.channels=[64,256,256]", "data.batch_size=512"]}
REAL_FILES = {
    "mnist_mlp": "MNIST/raw/train-images-idx3-ubyte.gz",
    "mnist_mlp_small": "MNIST/raw/train-images-idx3-ubyte.gz",
    "loop_overhead": "MNIST/raw/train-images-idx3-ubyte.gz",
    "cifar_cnn": "cifar-10-batches-py/data_batch_1",
    "imdb_rnn": "aclImdb",
}


def project_throughput(overrides: list[str], output_dir: Path) -> float:
    """(a): a whole `python -m experiments` run in-process, two epochs; its metrics.json figure."""
    import json

    from experiments.run.task import train

    cfg = compose([*overrides, "trainer.max_epochs=2", "test=false", f"paths.output_dir={output_dir}"])
    train(cfg)
    return json.loads((output_dir / "metrics.json").read_text())["samples_per_second"]


class Reference:
    """What (b) and (d) share: the run's net, optimiser, schedule and loss, and its training tensors
    normalised once and resident on the device; `batches()` is one epoch in a new random order."""

    def __init__(self, cfg, data, device: torch.device, precision: str, steps: int | None) -> None:
        from experiments.models.model import prepare_net
        from experiments.models.nets import build_net
        from experiments.models.optim import build_optimizer, build_scheduler
        from experiments.run.task import plain

        self.net = build_net(plain(cfg.model), data.spec).to(device)
        prepare_net(self.net, device, compile=cfg.compile)  # channels-last on GPUs, as a run does
        x, y = data.splits["train"]
        self.x = data.normalize(x.to(device)) if data.spec["kind"] == "image" else x.to(device).long()
        self.y = y.to(device).long()
        self.batch_size = cfg.data.batch_size
        self.steps = steps or -(-len(y) // self.batch_size)
        self.optimizer = build_optimizer(self.net, plain(cfg.optimizer))
        schedule = build_scheduler(self.optimizer, plain(cfg.scheduler), 2 * self.steps)
        self.scheduler = schedule["scheduler"] if schedule is not None else None
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
        self.augment = data.augment if data.spec["kind"] == "image" else None
        self.device = device

    def batches(self):
        order = torch.randperm(len(self.y), device=self.device)[: self.steps * self.batch_size]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            inputs = torch.index_select(self.x, 0, idx)  # row copies: much faster than x[idx] on a CPU
            yield (self.augment(inputs) if self.augment else inputs), torch.index_select(self.y, 0, idx)


def plain_throughput(cfg, data, device: torch.device, precision: str, steps: int | None) -> float:
    """(b): the same net, optimiser, schedule, batch size and augmentation in a hand-written loop."""
    reference = Reference(cfg, data, device, precision, steps)
    optimizer, scheduler = reference.optimizer, reference.scheduler

    def epoch() -> int:
        samples = 0
        for inputs, targets in reference.batches():
            with reference.autocast:
                loss = reference.loss(reference.net(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            samples += len(targets)
        return samples

    # As in a process that never imported Lightning: torch's own CUDA availability check, which every
    # optimiser step makes (Lightning's import switches it to a driver query: src/experiments/run/nvml.py).
    with plain_cuda_checks(device):
        epoch()  # warm-up
        synchronize(device)
        started = time.perf_counter()
        samples = epoch()
        synchronize(device)
    return samples / (time.perf_counter() - started)


def bare_lightning_throughput(cfg, data, device: torch.device, precision: str, steps: int | None) -> float:
    """(d): the plain loop's parts in the least a LightningModule and Trainer can be: no callbacks,
    logger, progress bar, checkpoints or validation. What Lightning's own step costs, before ours."""
    import lightning as L

    from experiments.reporting.callbacks import Throughput

    reference = Reference(cfg, data, device, precision, steps)

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = reference.net

        def training_step(self, batch, batch_idx: int) -> torch.Tensor:
            return reference.loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            if reference.scheduler is None:
                return reference.optimizer
            schedule = {"scheduler": reference.scheduler, "interval": "step"}
            return {"optimizer": reference.optimizer, "lr_scheduler": schedule}

    class Batches:
        def __iter__(self):
            return reference.batches()

        def __len__(self) -> int:
            return reference.steps

    throughput = Throughput()  # the clock of (a) and (c): training steps of the second epoch
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[throughput],
    )
    with plain_cuda_checks(device):  # as (a) and (b) train
        trainer.fit(Bare(), train_dataloaders=Batches())
    return throughput.samples_per_second


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--workloads", nargs="+", default=["mnist_mlp", "cifar_cnn", "imdb_rnn"], choices=list(WORKLOADS)
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no collapse on shared cores)")
    parser.add_argument("--data-dir", type=Path, help="use the real dataset files found here (default: synthetic)")
    parser.add_argument("--paths", default="abc", help="which of the paths a, b, c, d to run (d: bare Lightning)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every workload, e.g. data.batch_size=256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lightning as L
    from template import template_throughput

    from experiments.core.build import build
    from experiments.run.trainer import pick_precision

    device = torch.device(args.device)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    # cuDNN autotuning in every path, as a run has it (`trainer.benchmark`); the first Trainer built in this
    # process would switch it on for the paths after it anyway.
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.workloads:
        overrides, synthetic, steps_by_device = WORKLOADS[name]
        steps = steps_by_device[args.device]
        overrides = [*overrides, *(CUDA_OVERRIDES.get(name, []) if args.device == "cuda" else []), *args.overrides]
        overrides.append(f"trainer.accelerator={accelerator}")
        real = args.data_dir is not None and (args.data_dir / REAL_FILES[name]).exists()
        overrides.append(f"paths.data_dir={args.data_dir}" if real else f"data._target_={synthetic}")
        if steps:
            overrides.append(f"trainer.limit_train_batches={steps}")
        overrides.append("trainer.limit_val_batches=2")  # validation is not timed; keep it short
        cfg = compose([*overrides, "paths.output_dir=unused"])
        precision = pick_precision(cfg.trainer)
        data = build(cfg.data, "data", L.LightningDataModule)
        data.setup("fit")
        figures: dict[str, list[float]] = {p: [] for p in args.paths}
        with tempfile.TemporaryDirectory() as folder:
            for round_ in range(args.rounds):
                if "a" in args.paths:
                    figures["a"].append(project_throughput(overrides, Path(folder) / f"{round_}"))
                if "b" in args.paths:
                    figures["b"].append(plain_throughput(cfg, data, device, precision, steps))
                if "c" in args.paths:
                    figures["c"].append(template_throughput(cfg, data, accelerator, precision, steps))
                if "d" in args.paths:
                    figures["d"].append(bare_lightning_throughput(cfg, data, device, precision, steps))
                done = "  ".join(f"({p}) {v[-1]:,.0f}" for p, v in figures.items())
                print(f"{name} round {round_ + 1}/{args.rounds}: {done} samples/s", file=sys.stderr, flush=True)
        rows.append((name, "real" if real else "synthetic", cfg.data.batch_size, figures))
    print_table(rows, args)


def print_table(rows, args) -> None:
    def ratio(figures: dict, top: str, bottom: str) -> str:
        if top not in figures or bottom not in figures:
            return "-"
        return f"{statistics.median(t / b for t, b in zip(figures[top], figures[bottom], strict=True)):.2f}"

    def median(figures: dict, path: str) -> str:
        return f"{statistics.median(figures[path]):,.0f}" if path in figures else "-"

    from machine import cpu

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} torch thread(s)"
    where = f"{device}, {cpu()}, torch {torch.__version__}"
    print(f"\nsteady-state training samples/s, median of {args.rounds} rounds, {where}\n")
    print(
        "| workload | data | batch | (a) project | (b) plain loop | (c) template | (d) bare Lightning "
        "| (a)/(b) | (a)/(c) | (d)/(b) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, kind, batch_size, figures in rows:
        cells = [median(figures, p) for p in "abcd"]
        cells += [ratio(figures, "a", "b"), ratio(figures, "a", "c"), ratio(figures, "d", "b")]
        print(f"| {name} | {kind} | {batch_size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
