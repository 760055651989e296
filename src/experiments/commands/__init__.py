"""The `experiments` command line: `experiments [COMMAND] ARGUMENTS`, one module per command in this folder.

    experiments model=cnn data=cifar10                    # train, the default command (Hydra's command line)
    experiments train model=cnn data=cifar10              # the same, named
    experiments evaluate outputs/train/runs/<run>         # test a finished run again
    experiments predict outputs/train/runs/<run> photos/  # its predictions for new inputs, as a CSV file
    experiments --help                                    # these commands, then train's config groups

`python -m experiments` is the same command. A command is a module whose docstring's first line says what it
does and whose `main(argv)` runs it: the modules of this folder, and those other packages name in the
`experiments.commands` entry-point group (docs/extending.md). Its name is its first argument; anything else
(`key=value`, `-m`, `--help`) goes to train.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys

from experiments.core.errors import UserError, exit_for

DEFAULT = "train"
ENTRY_POINTS = "experiments.commands"
NAME = re.compile(r"[A-Za-z][\w-]*")  # a command's name; a Hydra override has `=`, a flag a leading dash


def own_commands() -> dict[str, str]:
    """Command name -> module, for the modules of this folder."""
    return {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def commands() -> dict[str, str]:
    """Every command: ours, then those installed packages add (ours keep their names)."""
    from importlib.metadata import entry_points

    added = {entry.name: entry.value for entry in entry_points(group=ENTRY_POINTS)}
    return {**added, **own_commands()}


def summary(module: str) -> str:
    doc = (importlib.import_module(module).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def print_commands() -> None:
    print("Commands (experiments COMMAND --help for each; without one, train):")
    for name, module in sorted(commands().items()):
        print(f"  {name:<10} {summary(module)}")
    print()


def find(name: str) -> str:
    """The module of the command `name`, or one line listing the commands there are."""
    known = own_commands()
    if name not in known:  # entry points are read only for a name that is not ours: they take a few tens of ms
        known = commands()
    if name not in known:
        raise UserError(f"no command {name!r}; choose from {', '.join(sorted(known))} (or give train's overrides)")
    return known[name]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = bool(argv) and NAME.fullmatch(argv[0]) is not None
    try:
        module = find(argv[0]) if named else own_commands()[DEFAULT]
    except UserError as error:
        exit_for(error)
    arguments = argv[1:] if named else argv
    if not named and arguments[:1] in (["--help"], ["-h"]):
        print_commands()  # `experiments --help`: the commands first, then train's own help (Hydra's)
    importlib.import_module(module).main(arguments)
