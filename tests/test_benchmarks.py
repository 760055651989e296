"""The benchmark scripts still run and print their tables (their figures are for docs/benchmarks.md, not tests)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocess runs of the whole CLI: the full tier


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_throughput_compares_the_four_paths():
    out = run_script("benchmarks/throughput.py", "--workloads", "mnist_mlp", "--rounds", "1", "--paths", "abcd")
    header = next(line for line in out.splitlines() if line.startswith("steady-state training samples/s"))
    assert re.search(r"1 torch thread\(s\), .+, \d+ cores, torch \d", header)  # the machine, for the docs
    row = next(line for line in out.splitlines() if line.startswith("| mnist_mlp |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["mnist_mlp", "synthetic", "128"]
    project, plain, template, bare, *ratios = (float(cell.replace(",", "")) for cell in cells[3:])
    assert min(project, plain, template, bare) > 0
    expected = [project / plain, project / template, bare / plain]
    assert ratios == pytest.approx(expected, abs=0.011)  # one round: no median


def test_startup_separates_imports_from_the_rest():
    out = run_script("benchmarks/startup.py", "--runs", "1")
    total = float(re.search(r"first training step: (\S+) s \(median of 1; .+, \d+ cores\)", out).group(1))
    imports = float(re.search(r"imports\s*: (\S+) s", out).group(1))
    rest = float(re.search(r"everything else\s*: (\S+) s", out).group(1))
    assert 0 < rest < total and abs(total - imports - rest) < 0.02


def test_hook_overhead_counts_and_times_both_versions():
    out = run_script(
        "benchmarks/hook_overhead.py",
        "data=mnist",
        "model=mlp",
        "model.width=8",
        "model.depth=1",
        "data.batch_size=16",
        "trainer.limit_train_batches=40",
    )
    contexts, keys = (
        int(n) for n in re.search(r"per step[^:]*: (\d+) profiler contexts, (\d+) checkpoint", out).groups()
    )
    assert contexts > 20 and keys >= 10  # two checkpoint callbacks, five hooks a step each, and the epoch's end
    assert len(re.findall(r"Lightning's +[\d.]+ us +the project's +[\d.]+ us a call", out)) == 3
    assert re.search(r"\(20 new, 19 old steps\): the project's [\d.]+ ms, with Lightning's defaults [\d.]+ ms", out)
