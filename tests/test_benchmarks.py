"""The benchmark scripts still run and print their tables (their figures are for docs/benchmarks.md, not tests)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_throughput_compares_the_four_paths():
    out = run_script("benchmarks/throughput.py", "--workloads", "mnist_mlp", "--rounds", "1", "--paths", "abcd")
    row = next(line for line in out.splitlines() if line.startswith("| mnist_mlp |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["mnist_mlp", "synthetic", "128"]
    project, plain, template, bare, *ratios = (float(cell.replace(",", "")) for cell in cells[3:])
    assert min(project, plain, template, bare) > 0
    expected = [project / plain, project / template, bare / plain]
    assert ratios == pytest.approx(expected, abs=0.011)  # one round: no median


def test_startup_separates_imports_from_the_rest():
    out = run_script("benchmarks/startup.py", "--runs", "1")
    total = float(re.search(r"first training step: (\S+) s", out).group(1))
    imports = float(re.search(r"imports\s*: (\S+) s", out).group(1))
    rest = float(re.search(r"everything else\s*: (\S+) s", out).group(1))
    assert 0 < rest < total and abs(total - imports - rest) < 0.02
