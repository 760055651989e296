"""The checks of a config value, shared by the central rules (config.py) and by the components that check
their own arguments where they arrive (data modules, nets, the optimiser, schedules, callbacks): each rule
returns None for a good value, else what is allowed; `require` turns the first bad one into one line."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TypeVar

from experiments.core.errors import UserError

Rule = Callable[[object], str | None]
Function = TypeVar("Function", bound=Callable)


def require(group: str, **checked: tuple[object, Rule]) -> None:
    """Each `key=(value, rule)` of a config group checked, in order: the first bad one raises one line,
    `group.key=value is not allowed: it must be ...`, as the central rules do."""
    for key, (value, rule) in checked.items():
        allowed = rule(value)
        if allowed is not None:
            raise UserError(f"{group}.{key}={value!r} is not allowed: it must be {allowed}")


def checks(group: str, **rules: Rule) -> Callable[[Function], Function]:
    """Declares a function's rules for its arguments: `require`d each time it is called, and, as its
    `argument_rules`, checked by core/build.py when it checks a component that names the function, before
    building it. For what a run builds late: a schedule is built once training starts, after the run has
    written its first files, and a value it refuses is still one line at start, with nothing left behind."""

    def declare(function: Function) -> Function:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            require(group, **{key: (bound.arguments[key], rule) for key, rule in rules.items()})
            return function(*args, **kwargs)

        checked.argument_rules = rules
        return checked

    return declare


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


def mean_and_std(value: object) -> str | None:
    """A normalisation: null, or per-channel `mean` and `std` in 0..1 units (what pretrained weights expect)."""
    figures = isinstance(value, dict) and set(value) == {"mean", "std"}
    figures = figures and all(is_sequence(value[k]) and len(value[k]) in (1, 3) for k in ("mean", "std"))
    figures = figures and all(isinstance(v, int | float) for k in ("mean", "std") for v in value[k])
    if value is None or (figures and min(value["std"]) > 0):
        return None
    return "null or {mean: [3 numbers], std: [3 numbers > 0]} in 0..1 units, e.g. ImageNet's"
