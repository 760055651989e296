"""The package's shape: its folders are its layers (`experiments.LAYERS`, top to bottom), imports run one way,
from the entry points down to `core/`, with no circle anywhere; and it imports on systems without `fcntl` or CPU
affinity. A new module needs no edit here: its folder says its layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import experiments

PACKAGE = Path(experiments.__file__).parent


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
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from experiments.run import task`
    return {name for name in found if name.split(".")[0] == "experiments"}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {module_name(path): path for path in package.rglob("*.py")}
    return {name: imports_of(path) & modules.keys() - {name} for name, path in modules.items()}


def layer_of(name: str) -> int:
    """0 for the entry points at the package's top (`__main__`, the `python -m experiments.predict` forms), then
    1 + the position of the module's folder in `experiments.LAYERS`; the package itself is the bottom."""
    parts = name.split(".")
    if len(parts) == 1:  # `experiments`, which holds LAYERS and nothing to import
        return len(experiments.LAYERS) + 1
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return 0
    return 1 + experiments.LAYERS.index(parts[1])


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, targets in edges.items()
        for target in targets
        if layer_of(target) < layer_of(name)
    ]


def test_every_folder_is_a_layer_in_order():
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert folders == set(experiments.LAYERS), "a folder of the package must be placed in experiments.LAYERS"


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
    assert not upward_imports(graph())


def test_an_upward_import_is_caught():
    """The check above can fail: a module of core/ that imports the train task is reported."""
    edges = graph()
    edges["experiments.core.errors"] = edges["experiments.core.errors"] | {"experiments.run.task"}
    assert upward_imports(edges) == ["experiments.core.errors imports experiments.run.task"]


def test_the_bottom_modules_import_nothing_of_ours():
    edges = graph()
    assert edges["experiments.core.errors"] == set()
    assert edges["experiments.core.atomic"] == set()
    assert edges["experiments.core.run_dir"] <= {"experiments.core.errors", "experiments.core.atomic"}


@pytest.mark.slow
def test_the_package_imports_without_fcntl_or_cpu_affinity():
    # Windows has no fcntl; macOS and Windows have no os.sched_getaffinity. Both made unavailable here.
    script = """
import os, sys
sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
del os.sched_getaffinity
import experiments.commands.train, experiments.commands.evaluate, experiments.commands.predict
from experiments.run.sweep import usable_cores
assert usable_cores() == os.cpu_count(), usable_cores()
print("imported")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
