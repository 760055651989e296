"""The checks of a config value, shared by the central rules (config.py) and by the components that check
their own arguments (nets, schedules): each rule returns None for a good value, else what is allowed."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence

from experiments.core.errors import UserError

Rule = Callable[[object], str | None]


def require(group: str, **checked: tuple[object, Rule]) -> None:
    """Each `key=(value, rule)` of a config group checked, in order: the first bad one raises one line,
    `group.key=value is not allowed: it must be ...`, as the central rules do."""
    for key, (value, rule) in checked.items():
        allowed = rule(value)
        if allowed is not None:
            raise UserError(f"{group}.{key}={value!r} is not allowed: it must be {allowed}")


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_sequence(value: object) -> bool:
    """A list of values: a list or tuple, or a config's list (OmegaConf's ListConfig)."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def integer(minimum: int, maximum: int | None = None) -> Rule:
    def check(value: object) -> str | None:
        ok = is_integer(value) and value >= minimum and (maximum is None or value <= maximum)
        return None if ok else f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    return check


def boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def batch_limit(value: object) -> str | None:
    """Lightning's limit_*_batches: a count of batches, or a fraction of them."""
    ok = (is_integer(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value <= 1.0)
    return None if ok else "a count of batches (an integer >= 0) or a fraction between 0.0 and 1.0"


def betas(value: object) -> str | None:
    ok = is_sequence(value) and len(value) == 2
    ok = ok and all(isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in value)
    return None if ok else "two numbers >= 0.0 and < 1.0, e.g. [0.9,0.999]"


def number(low: float, high: float | None = None, low_inclusive: bool = True) -> Rule:
    def check(value: object) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value >= low if low_inclusive else value > low) and (high is None or value < high)
        bounds = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        return None if ok else f"a number {bounds}"

    return check


def one_of(*choices: str) -> Rule:
    def check(value: object) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"

    return check


def words(value: object) -> str | None:
    ok = is_sequence(value) and all(isinstance(v, str) and v.strip() for v in value)
    return None if ok else "a list of words, e.g. [baseline,v2]"


def text(value: object) -> str | None:
    return None if isinstance(value, str) else "a text (quote it if it has spaces or commas)"


def positive_integers(value: object) -> str | None:
    ok = is_sequence(value) and len(value) > 0 and all(is_integer(v) and v >= 1 for v in value)
    return None if ok else "a non-empty list of positive integers, e.g. [32,64]"


def import_target(path: str, group: str, kind: type) -> type:
    """The class (or function, for `kind=object`) a config's `_target_` names, or one line saying why not.
    (Imported here rather than by Hydra's `get_object`, which also logs each failure as an error.)"""
    parts = path.split(".")
    target, problem = None, f"no module named {parts[0]!r}"
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes of it
        module = ".".join(parts[:cut])
        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):  # a module it imports is missing
                problem = str(error)
                break
            problem = f"no module named {error.name!r}"
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute, None)
        if target is None:
            problem = f"module {module!r} has no {'.'.join(parts[cut:])!r}"
        break
    if target is None:
        raise UserError(f"{group}._target_={path!r} cannot be imported: {problem}")
    if kind is not object and not (inspect.isclass(target) and issubclass(target, kind)):
        raise UserError(f"{group}._target_={path!r} is not a {kind.__module__}.{kind.__qualname__} class")
    return target
