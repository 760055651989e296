"""CIFAR-10 speedrun: `experiment=cifar10_speedrun` against airbench's `train94`, on the same GPU, the same
data, in one process, runs alternating.

On a GPU machine (torch, Lightning, torchmetrics, torchvision and TensorBoard installed), from the top of
a source checkout. Without network, install the pure-Python wheels of hydra-core, omegaconf, antlr4 and
airbench into a folder first:

    pip install --no-index --no-deps --target /tmp/wheels WHEELS_DIR/*.whl
    PYTHONPATH=/tmp/wheels:src python benchmarks/speedrun_vs_airbench.py --runs 5

With network, `pip install -e . airbench==0.1.8` and `python benchmarks/speedrun_vs_airbench.py` do.

What it does:
1. Data: 50,000 training and 10,000 test images, uint8 32x32x3, 10 classes, random with a fixed seed
   (or the real CIFAR-10 with --data-dir DIR holding cifar-10-batches-py/). It is written twice, once
   per reader: `cifar10/{train,test}.pt` as airbench reads them, and the official python batches that
   our loader reads. Same pixels, same labels; on random data both accuracies are chance: only the
   times compare (with real data, the accuracies too).
2. Warm-up: one whole airbench run and a one-epoch run of ours (with its validation and test), so
   that neither timed run pays for cuDNN autotuning or lazy initialisation.
3. Timed runs, alternating: `airbench.train94()` followed by its flip + translate test-time-augmented
   evaluation (which `train94(verbose=False)` skips), and our `train(experiment=cifar10_speedrun)` with
   the default callbacks and logger, both whole runs from the files on disk to the test accuracy.
   Times are wall clock around each call, after `torch.cuda.synchronize()`.
4. A table: median seconds per run of each, their ratio (the target: ours / airbench <= 1.0), the test
   accuracies, the GPU's name, torch's version. Paste it into docs/benchmarks.md with the date.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_data(data_dir: Path | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 32 x 32 x 3, train labels, test images, test labels)."""
    if data_dir is not None:
        from experiments.data.cifar10 import TEST_BATCHES, TRAIN_BATCHES, read_batch

        def load(names):
            images, labels = zip(*(read_batch(data_dir / "cifar-10-batches-py" / n) for n in names), strict=True)
            return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels)

        return (*load(TRAIN_BATCHES), *load(TEST_BATCHES))
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, 50_000),
        rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, 10_000),
    )


def write_for_airbench(folder: Path, train_x, train_y, test_x, test_y) -> None:
    (folder / "cifar10").mkdir(parents=True)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        saved = {"images": torch.from_numpy(x), "labels": torch.from_numpy(y).long(), "classes": classes}
        torch.save(saved, folder / "cifar10" / f"{name}.pt")


def write_official_batches(folder: Path, train_x, train_y, test_x, test_y) -> None:
    """The python batches of cifar-10-python.tar.gz: dicts of (N, 3072) uint8 rows and label lists.

    Pickle protocol 4 stores the pixel rows as raw bytes, as the official (Python 2) files do. Protocol 2
    from Python 3 would store them as a latin-1 string re-encoded on load: 50 times slower to read (0.34 s
    a batch), 2 s of each run that the official files do not cost."""
    target = folder / "cifar-10-batches-py"
    target.mkdir(parents=True)

    def write(name: str, x: np.ndarray, y: np.ndarray) -> None:
        rows = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))
        with open(target / name, "wb") as file:
            pickle.dump({b"data": rows, b"labels": [int(v) for v in y]}, file, protocol=4)

    for i, (x, y) in enumerate(zip(np.array_split(train_x, 5), np.array_split(train_y, 5), strict=True)):
        write(f"data_batch_{i + 1}", x, y)
    write("test_batch", test_x, test_y)


def ours(data_dir: Path, output_dir: Path, *extra: str) -> tuple[float, float]:
    """One whole run of the recipe: (seconds, test accuracy)."""
    from experiments.core.config import compose
    from experiments.run.task import train

    overrides = ["experiment=cifar10_speedrun", f"paths.data_dir={data_dir}", f"paths.output_dir={output_dir}"]
    cfg = compose([*overrides, "trainer.accelerator=gpu", *extra])
    torch.cuda.synchronize()
    started = time.perf_counter()
    train(cfg)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    test = json.loads((output_dir / "metrics.json").read_text())["test"]
    return seconds, test.get("test/acc", float("nan"))


def theirs(airbench) -> tuple[float, float]:
    """One whole run of airbench's recipe: `train94`, then its test-time-augmented evaluation, which
    `train94(verbose=False)` leaves out (it returns the model): (seconds, test accuracy)."""
    torch.cuda.synchronize()
    started = time.perf_counter()
    model = airbench.train94(verbose=False)
    test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    accuracy = airbench.evaluate(model, test, tta_level=airbench.lib_airbench94.hyp["net"]["tta_level"])
    torch.cuda.synchronize()
    return time.perf_counter() - started, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, help="real CIFAR-10: a folder holding cifar-10-batches-py/")
    parser.add_argument("overrides", nargs="*", help="config overrides for our runs, e.g. optimizer.lr=2")
    args = parser.parse_args()
    import airbench

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        arrays = make_data(args.data_dir)
        write_for_airbench(folder, *arrays)
        write_official_batches(folder / "data", *arrays)
        os.chdir(folder)  # airbench reads cifar10/ from the working folder
        theirs(airbench)  # warm-up (`warmup94` is the same full run when not verbose)
        # A whole epoch, its validation and the test: cuDNN tunes every shape a timed run meets.
        ours(folder / "data", folder / "warmup", *args.overrides, "trainer.max_epochs=1")
        times: dict[str, list[float]] = {"airbench train94": [], "ours cifar10_speedrun": []}
        accuracies: dict[str, list[float]] = {name: [] for name in times}
        for run in range(args.runs):
            seconds, accuracy = theirs(airbench)
            times["airbench train94"].append(seconds)
            accuracies["airbench train94"].append(accuracy)
            seconds, accuracy = ours(folder / "data", folder / f"run{run}", f"seed={run}", *args.overrides)
            times["ours cifar10_speedrun"].append(seconds)
            accuracies["ours cifar10_speedrun"].append(accuracy)
            done = ", ".join(f"{name} {seconds[-1]:.2f} s" for name, seconds in times.items())
            print(f"run {run + 1}/{args.runs}: {done}", flush=True)

    data = "real CIFAR-10" if args.data_dir else "random CIFAR-shaped data (accuracy is chance)"
    settings = f", overrides {' '.join(args.overrides)}" if args.overrides else ""
    from machine import cpu

    device = f"{torch.cuda.get_device_name()}, {cpu()}, torch {torch.__version__}"
    print(f"\n{device}, {data}{settings}, median of {args.runs} runs\n")
    print("| | seconds per run | test accuracy |")
    print("|---|---:|---:|")
    for name in times:
        print(f"| {name} | {statistics.median(times[name]):.2f} | {statistics.median(accuracies[name]):.4f} |")
    ratios = [o / a for o, a in zip(times["ours cifar10_speedrun"], times["airbench train94"], strict=True)]
    print(f"\nours / airbench: {statistics.median(ratios):.2f} (median of per-run ratios; target <= 1.0)")


if __name__ == "__main__":
    main()
