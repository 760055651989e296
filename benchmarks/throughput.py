"""Steady-state training throughput: the project's path against a plain PyTorch loop and the template path.

    python benchmarks/throughput.py                          # CPU, the three workloads, synthetic data
    python benchmarks/throughput.py --device cuda            # on a GPU (bf16 where supported, as a run would)
    python benchmarks/throughput.py --workloads mnist_mlp --rounds 7 --data-dir data   # real files if there
    python benchmarks/throughput.py --workloads mnist_mlp data.batch_size=256          # any config override

In one process, each round measures the three paths one after another on the same net, batch size,
optimiser and data, and each measurement is the second epoch of `steps` batches (the first is warm-up):
  (a) project   `experiments.train.train` with the recipe's config: the real Classifier, DataModule,
                Trainer, default callbacks and TensorBoard logger, exactly what `python -m experiments`
                runs; its figure is the one the run writes to metrics.json (`samples_per_second`).
  (b) plain     a hand-written PyTorch loop: the same net, optimiser and schedule from the project's
                builders, inputs normalised once and resident on the device, a random permutation per
                epoch, the recipe's augmentation on the device (CIFAR-10); no Lightning.
  (c) template  a torchvision-style per-sample Dataset and DataLoader feeding a LightningModule that logs
                and updates torchmetrics every step (benchmarks/template.py).
The table gives the median samples/s of each path over the rounds, and the median of the per-round
ratios (a)/(b) and (a)/(c): pairing within a round cancels most of the drift on a shared machine.
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
    "cifar_cnn": (["data=cifar10", "model=cnn"], "synthetic.SyntheticCIFAR10", {"cpu": 5, "cuda": None}),
    "imdb_rnn": (["data=imdb", "model=rnn"], "synthetic.SyntheticIMDB", {"cpu": 2, "cuda": None}),
}
# On a GPU the CIFAR-10 CNN is the reference size: 64/256/256 channels at batch 512.
CUDA_OVERRIDES = {"cifar_cnn": ["model.channels=[64,256,256]", "data.batch_size=512"]}
REAL_FILES = {
    "mnist_mlp": "MNIST/raw/train-images-idx3-ubyte.gz",
    "mnist_mlp_small": "MNIST/raw/train-images-idx3-ubyte.gz",
    "cifar_cnn": "cifar-10-batches-py/data_batch_1",
    "imdb_rnn": "aclImdb",
}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def project_throughput(overrides: list[str], output_dir: Path) -> float:
    """(a): a whole `python -m experiments` run in-process, two epochs; its metrics.json figure."""
    import json

    from experiments.train import train

    cfg = compose([*overrides, "trainer.max_epochs=2", "test=false", f"paths.output_dir={output_dir}"])
    train(cfg)
    return json.loads((output_dir / "metrics.json").read_text())["samples_per_second"]


def plain_throughput(cfg, data, device: torch.device, precision: str, steps: int | None) -> float:
    """(b): the same net, optimiser, schedule, batch size and augmentation in a hand-written loop."""
    from experiments.models.nets import build_net
    from experiments.models.optim import build_optimizer, build_scheduler
    from experiments.train import plain

    net = build_net(plain(cfg.model), data.spec).to(device)
    if data.spec["kind"] == "image" and cfg.trainer.get("channels_last") and len(data.spec["shape"]) == 3:
        net = net.to(memory_format=torch.channels_last)
    x, y = data.splits["train"]
    x, y = x.to(device), y.to(device).long()
    x = data.normalize(x) if data.spec["kind"] == "image" else x.long()
    batch_size = cfg.data.batch_size
    steps = steps or -(-len(y) // batch_size)
    optimizer = build_optimizer(net, plain(cfg.optimizer))
    scheduler = build_scheduler(optimizer, plain(cfg.scheduler), 2 * steps)
    loss_function = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    augment = getattr(data, "augment", None)

    def epoch() -> int:
        order = torch.randperm(len(y), device=device)[: steps * batch_size]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs = torch.index_select(x, 0, idx)  # row copies: much faster than x[idx] on a CPU
            inputs = augment(inputs) if augment is not None and data.spec["kind"] == "image" else inputs
            with autocast:
                loss = loss_function(net(inputs), torch.index_select(y, 0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        return len(order)

    epoch()  # warm-up
    synchronize(device)
    started = time.perf_counter()
    samples = epoch()
    synchronize(device)
    return samples / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no collapse on shared cores)")
    parser.add_argument("--data-dir", type=Path, help="use the real dataset files found here (default: synthetic)")
    parser.add_argument("--paths", default="abc", help="which of the paths a, b, c to run")
    parser.add_argument("overrides", nargs="*", help="config overrides for every workload, e.g. data.batch_size=256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hydra.utils import instantiate
    from template import template_throughput

    from experiments.train import pick_precision

    device = torch.device(args.device)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
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
        data = instantiate(cfg.data)
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

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"\nsteady-state training samples/s, median of {args.rounds} rounds, {device}, torch {torch.__version__}\n")
    print("| workload | data | batch | (a) project | (b) plain loop | (c) template | (a)/(b) | (a)/(c) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, kind, batch_size, figures in rows:
        cells = [median(figures, p) for p in "abc"] + [ratio(figures, "a", "b"), ratio(figures, "a", "c")]
        print(f"| {name} | {kind} | {batch_size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
