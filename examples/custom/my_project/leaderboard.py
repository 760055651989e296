"""Rank finished runs by their test accuracy: `experiments leaderboard outputs/`."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.core.run_dir import Metrics


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="experiments leaderboard", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="folders searched for the runs' metrics.json")
    args = parser.parse_args(argv)
    runs = [(Metrics.read(path), path.parent) for folder in args.folders for path in folder.rglob("metrics.json")]
    tested = sorted(((m.test["test/acc"], run) for m, run in runs if "test/acc" in m.test), reverse=True)
    for accuracy, run in tested:
        print(f"{accuracy:.4f}  {run}")
