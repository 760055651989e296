"""The package's shape: imports run one way, from the entry points down to a bottom layer that imports
nothing of ours, with no circle anywhere; and it imports on systems without `fcntl` or CPU affinity."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import experiments

PACKAGE = Path(experiments.__file__).parent

# Top to bottom. A module may import from its own layer and the layers below it, never from one above.
LAYERS = [
    {"experiments.__main__", "experiments.cli", "experiments.evaluate", "experiments.predict"},  # entry points
    # the task, how its runs are built, and how a finished one is loaded back
    {"experiments.train", "experiments.sweep", "experiments.trainer", "experiments.trained"},
    set(),  # the parts (data, models, callbacks, config, ...): every module not named in another layer
    {"experiments.lightning_internals"},  # all the parts rely on beyond Lightning's public API
    {"experiments.errors", "experiments.atomic", "experiments.runs"},  # what a failure means; where files live
]
PARTS = 2


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at the top or inside a function (a circle is one either way)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from experiments import cli`
    return {name for name in found if name.split(".")[0] == "experiments"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & modules.keys() - {name} for name, path in modules.items()}


def layer_of(name: str) -> int:
    return next((i for i, layer in enumerate(LAYERS) if name in layer), PARTS)


def test_the_import_graph_has_no_circle():
    edges = graph()
    # A package's __init__ imports its modules, and a module imports its package's siblings: not circles of
    # ours, so the edges from a package to the modules inside it are left out.
    edges = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in edges.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                circle = [*path[path.index(target) :], target]
                raise AssertionError(f"import circle: {' -> '.join(circle)}")
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


def test_lower_layers_never_import_upper_ones():
    upward = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for target in targets
        if layer_of(target) < layer_of(name)
    ]
    assert not upward


def test_the_bottom_layer_imports_nothing_above_it():
    edges = graph()
    assert edges["experiments.errors"] == set()
    assert edges["experiments.atomic"] == set()
    assert edges["experiments.runs"] <= {"experiments.errors", "experiments.atomic"}


@pytest.mark.slow
def test_the_package_imports_without_fcntl_or_cpu_affinity():
    # Windows has no fcntl; macOS and Windows have no os.sched_getaffinity. Both made unavailable here.
    script = """
import os, sys
sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
del os.sched_getaffinity
import experiments, experiments.cli, experiments.train, experiments.sweep, experiments.evaluate
from experiments.sweep import usable_cores
assert usable_cores() == os.cpu_count(), usable_cores()
print("imported")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
