"""The `experiments` command line: `experiments [COMMAND] ARGUMENTS`, one module per command in this folder.

    experiments model=cnn data=cifar10                    # train, the default command (Hydra's command line)
    experiments train model=cnn data=cifar10              # the same, named
    experiments evaluate outputs/train/runs/<run>         # test a finished run again
    experiments predict outputs/train/runs/<run> photos/  # its predictions for new inputs, as a CSV file
    experiments --help                                    # these commands, then train's config groups

`python -m experiments` is the same command. A command is a module of this folder whose docstring's first line
says what it does and whose `main(argv)` runs it; the dispatcher finds it by its file name.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

DEFAULT = "train"


def commands() -> list[str]:
    """The command names: the modules of this folder."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_"))


def summary(name: str) -> str:
    doc = importlib.import_module(f"{__name__}.{name}").__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def print_commands() -> None:
    print("Commands (experiments COMMAND --help for each; without one, train):")
    for name in commands():
        print(f"  {name:<10} {summary(name)}")
    print()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = argv[0] if argv and argv[0] in commands() else DEFAULT
    arguments = argv[1:] if argv and argv[0] == name else argv
    if name == DEFAULT and arguments[:1] in (["--help"], ["-h"]) and argv[:1] != [DEFAULT]:
        print_commands()  # `experiments --help`: the commands first, then train's own help (Hydra's)
    importlib.import_module(f"{__name__}.{name}").main(arguments)
