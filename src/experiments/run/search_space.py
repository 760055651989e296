"""Hydra's sweep syntax as an Optuna search space, and a trial's values back as Hydra overrides.

    choice(a, b, c)  or  a,b,c        a categorical over those values
    range(1, 5)  range(0.1, 0.5, 0.1) the values the range yields (its stop excluded, as in Hydra), step kept
    interval(0.0, 0.5)                a float anywhere from start to end
    tag(log, interval(1e-4, 1e-1))    on a log scale (also `tag(log, range(1, 65))`, step 1)
    64                                no sweep: the same value for every trial

Written against Hydra's override grammar (hydra.core.override_parser), which parses both the command line
and the sweeper's `params`; `shuffle(...)` and other tags have no meaning for a sampler and are refused.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from experiments.core.errors import UserError


@dataclass
class SearchSpace:
    distributions: dict[str, Any] = field(default_factory=dict)  # parameter -> optuna distribution
    keys: dict[str, str] = field(default_factory=dict)  # parameter -> its key as an override writes it (`+x`)
    fixed: list[str] = field(default_factory=list)  # overrides every trial gets as they are

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's job: the fixed overrides, then one `key=value` per searched parameter."""
        return [*self.fixed, *(f"{self.keys[name]}={as_override_value(params[name])}" for name in self.distributions)]

    def as_json(self) -> dict[str, str]:
        """The space in a form a study can keep and compare (a resumed search must search the same space)."""
        from optuna.distributions import distribution_to_json

        return {name: distribution_to_json(d) for name, d in sorted(self.distributions.items())}


def search_space(params: Mapping[str, Any] | None, arguments: Iterable[str]) -> SearchSpace:
    """The sweeper's `params`, then the command line's arguments (which win for the same key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    by_key = {}
    for override in parser.parse_overrides(lines):
        by_key.pop(override.key_or_group, None)  # re-insert: a later one replaces an earlier one, in its place
        by_key[override.key_or_group] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution(override)
            space.keys[key] = override.get_key_element()
        else:
            space.fixed.append(override.input_line)
    return space


def distribution(override) -> Any:
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep, line = override.value(), override.input_line
    tags = set(sweep.tags)
    if tags - {"log"} or getattr(sweep, "shuffle", False):
        raise UserError(f"{line}: a search takes tag(log, ...) only; shuffle and other tags mean nothing to a sampler")
    log = "log" in tags
    if override.is_choice_sweep():
        if log:
            raise UserError(f"{line}: tag(log, ...) needs a range or an interval, not a choice")
        choices = list(sweep.list)
        if not all(value is None or isinstance(value, bool | int | float | str) for value in choices):
            raise UserError(f"{line}: a choice holds numbers, strings, true/false or null, not lists or dicts")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise UserError(f"{line}: the range is empty")
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            if log and sweep.step != 1:
                raise UserError(f"{line}: a log-scale range steps by 1")
            return IntDistribution(values[0], values[-1], log=log, step=1 if log else sweep.step)
        if log:
            raise UserError(f"{line}: a log-scale range takes ints; use tag(log, interval(...)) for floats")
        step = decimal.Decimal(str(sweep.step))  # exact, as Hydra's own FloatRange counts
        high = decimal.Decimal(str(sweep.start)) + step * (len(values) - 1)
        return FloatDistribution(float(sweep.start), float(high), step=float(step))
    if override.is_interval_sweep():
        if not sweep.start < sweep.end:
            raise UserError(f"{line}: an interval needs start < end")
        if log and sweep.start <= 0:
            raise UserError(f"{line}: a log-scale interval starts above 0")
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    raise UserError(f"{line}: not a sweep a search understands; use choice, range or interval")


def as_override_value(value: Any) -> str:
    """A value as an override writes it: bare where Hydra reads it back as the same value, quoted otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _reads_back(text, value):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _reads_back(text: str, value: Any) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        (override,) = OverridesParser.create().parse_overrides([f"key={text}"])
    except OverrideParseException:
        return False
    return not override.is_sweep_override() and override.value() == value and type(override.value()) is type(value)
