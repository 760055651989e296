"""Freed memory stays in the process for the next step (glibc), unless the user set malloc's own variables."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's; other C libraries are left alone",
)

# Where a 64 MiB tensor lives: in malloc's heap (kept and reused after free) or in a mapping of its
# own (returned to the kernel on free, and mapped and faulted in afresh by the next step).
PROBE = """
import sys, torch
from experiments.run.allocator import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "on" else False
block = torch.empty(64 << 20, dtype=torch.uint8)
heap = next(line for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
start, stop = (int(bound, 16) for bound in heap.split()[0].split("-"))
print(took, start <= block.data_ptr() < stop)
"""


def probe(setting: str, env: dict | None = None) -> tuple[bool, bool]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, setting],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    took, in_heap = result.stdout.split()
    return took == "True", in_heap == "True"


@pytest.mark.slow  # fresh interpreters that import torch: the full tier
def test_large_blocks_come_from_the_heap_and_stay_there():
    assert probe("on") == (True, True)
    assert probe("off") == (False, False)  # malloc's default: a mapping per block, returned on free


@pytest.mark.slow  # fresh interpreters that import torch: the full tier
def test_a_users_malloc_variables_take_precedence():
    assert probe("on", env={"MALLOC_MMAP_THRESHOLD_": "131072"}) == (False, False)
