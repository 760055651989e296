"""The machine a figure comes from, as docs/benchmarks.md names it: the CPU model and the cores a process
may use, for figures that depend on the CPU (every one of them, a GPU's too: the host feeds it)."""

from __future__ import annotations

import os
import platform


def cpu() -> str:
    """e.g. "AMD EPYC, 2 cores": the model from /proc/cpuinfo on Linux, else what `platform` knows."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            name = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), name)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"
