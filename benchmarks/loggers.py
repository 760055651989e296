"""What a tracker costs: training samples/s and wall time per run (metrics.json) with each logger, the runs of
the loggers alternating so that a change in the machine's load falls on all of them alike. Medians.

    python benchmarks/loggers.py                                   # tensorboard and mlflow, 3 rounds
    python benchmarks/loggers.py --loggers tensorboard mlflow none --rounds 5
    python benchmarks/loggers.py --workloads mnist_mlp             # one of WORKLOADS (MNIST: paths.data_dir)

Every run is a fresh `python -m experiments` in one temporary folder, so MLflow's local store
(outputs/mlflow.db) grows over the rounds as it does for a user.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu

WORKLOADS = {
    "default": [],  # python -m experiments: the CNN on the bundled digits, 20 epochs
    "mnist_mlp": ["experiment=mnist_mlp", "trainer.max_epochs=5"],
}


def one_run(overrides: list[str], folder: Path) -> dict:
    command = [sys.executable, "-m", "experiments", *overrides]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(overrides)} failed:\n{result.stderr[-3000:]}")
    (metrics,) = sorted(folder.glob("outputs/train/runs/*/metrics.json"), key=lambda p: p.stat().st_mtime)[-1:]
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loggers", nargs="+", default=["tensorboard", "mlflow"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    args, extra = parser.parse_known_args()
    print(f"{cpu()}; {args.rounds} rounds, loggers alternating; extra overrides: {' '.join(extra) or '-'}")
    with tempfile.TemporaryDirectory(prefix="loggers-") as folder:
        for workload in args.workloads:
            seen = {logger: [] for logger in args.loggers}
            for round_ in range(args.rounds):
                order = args.loggers if round_ % 2 == 0 else args.loggers[::-1]
                for logger in order:
                    seen[logger].append(one_run([*WORKLOADS[workload], f"logger={logger}", *extra], Path(folder)))
            base = statistics.median(m["samples_per_second"] for m in seen[args.loggers[0]])
            for logger, runs in seen.items():
                speed = statistics.median(m["samples_per_second"] for m in runs)
                wall = statistics.median(m["wall_seconds"] for m in runs)
                print(
                    f"{workload:<10} logger={logger:<12} {speed:9,.0f} samples/s ({speed / base:.2f} of "
                    f"{args.loggers[0]})  {wall:6.1f} s a run   samples/s per round: "
                    + " ".join(f"{m['samples_per_second']:,.0f}" for m in runs)
                )


if __name__ == "__main__":
    main()
