"""Startup: from process start to the first training step, with the time spent importing shown apart.

    python benchmarks/startup.py                       # the default run on the bundled digits, 5 times
    python benchmarks/startup.py model=mlp --runs 3    # any overrides of `python -m experiments`

Each run is a fresh `python -X importtime -m experiments ... trainer.max_epochs=1` with one extra
callback (`first_step.FirstStep`) that prints the wall-clock time of the first training step. Startup is
that time minus the moment the process was launched; imports are the sum of the top-level cumulative
times that `-X importtime` reports (every module the run loaded, whenever it loaded it). The rest is
the framework's own work: composing the config, reading the data, building the model and the Trainer,
the sanity check of two validation batches. Reported: the median over the runs.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)")


def one_run(overrides: list[str], folder: Path) -> tuple[float, float, list[tuple[float, str]]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-X", "importtime", "-m", "experiments", *overrides, "trainer.max_epochs=1"]
    command.append("+callbacks.first_step._target_=first_step.FirstStep")
    launched = time.time()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    first_step = float(re.search(r"first training step at (\S+)", result.stdout).group(1))
    top_level = [(int(us) / 1e6, name) for us, indent, name in IMPORT_LINE.findall(result.stderr) if not indent]
    return first_step - launched, sum(seconds for seconds, _ in top_level), top_level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    totals, imports, heaviest = [], [], {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.runs):
            total, imported, top_level = one_run(args.overrides, Path(folder))
            totals.append(total), imports.append(imported)
            for seconds, name in top_level:
                heaviest.setdefault(name, []).append(seconds)
    from machine import cpu

    total, imported = statistics.median(totals), statistics.median(imports)
    print(f"process start to first training step: {total:.2f} s (median of {args.runs}; {cpu()})")
    print(f"  imports                            : {imported:.2f} s")
    rest = statistics.median(t - i for t, i in zip(totals, imports, strict=True))
    print(f"  everything else                    : {rest:.2f} s")
    top = sorted(((statistics.median(v), k) for k, v in heaviest.items()), reverse=True)[:8]
    print("heaviest top-level imports: " + ", ".join(f"{name} {seconds:.2f} s" for seconds, name in top))


if __name__ == "__main__":
    main()
