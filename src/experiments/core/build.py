"""The one way a run builds what its config names by `_target_`: the data module, the net, the optimiser and its
schedule, the callbacks, the loggers, the Trainer, and any `_target_` node inside their settings.

    datamodule = build(cfg.data, "data", L.LightningDataModule)
    optimizer = component(cfg.optimizer, "optimizer", torch.optim.Optimizer)  # imported, of the right kind
    optimizer.check(groups, lr=0.1)   # at start: its arguments bind, its declared rules hold; nothing built
    optimizer.build(groups, lr=0.1)   # later, once

`component` reads a config node: it imports the `_target_`, checks that it is a class of the kind the group
needs (or a function, whose result `build` checks), and keeps the rest of the node as its settings, plain
values. The package builds it when it has the arguments that are not in the config (the net's parameters for
an optimiser, the optimiser and the run's length for a schedule): a component is a partial, checked. A node
nested in the settings that has a `_target_` of its own is built first and passed in, or, with `_partial_:
true`, passed as a functools.partial of its target and settings, its other arguments to come from whoever
calls it (Hydra's meaning). On a group's own node `_partial_` changes nothing: the package builds each group
when it has all its arguments.

Each mistake is one line that names the group (an exit code 2 by core/errors.py):
    model._target_='my_nets.Wide' cannot be imported: no module named 'my_nets'
    optimizer._target_='torch.nn.Linear' is not a torch.optim.optimizer.Optimizer class
    model: MLP got an unexpected keyword argument 'wdth'; `--cfg job` shows its settings
and so is a value the component refuses: by its own rules (core/rules.py: `require`d where the values arrive,
or declared with `checks`, which `check` applies before it is built), or by a ValueError or TypeError its
constructor raises for them (Lightning's Trainer says so of an accelerator it does not know).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from experiments.core.errors import UserError
from experiments.core.rules import require


def import_target(path: str, group: str, kind: type = object) -> Callable:
    """The class of `kind`, or the function (which `Component.build` holds to return one), that a config's
    `_target_` names, or one line saying why not. (Imported here rather than by Hydra's `get_object`, which also
    logs each failure as an error.)"""
    parts = str(path).split(".")
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
    if inspect.isclass(target) and not issubclass(target, kind):
        raise UserError(f"{group}._target_={path!r} is not a {_name(kind)} class")
    if not callable(target):
        raise UserError(f"{group}._target_={path!r} is not a class or a function")
    return target


@dataclasses.dataclass(frozen=True)
class Component:
    """A config node's target, imported and of its group's kind, and its settings: plain values, with nested
    `_target_` nodes as components of their own. Built by `build`, with the arguments the config does not hold."""

    group: str  # where it is in the config, for the error lines: "model", "callbacks.last_checkpoint"
    target: Callable
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: type = object  # what it builds: the target is a subclass, or a function that returns one
    partial: bool = False  # a nested node with `_partial_: true`: passed on as a functools.partial

    @property
    def name(self) -> str:
        return getattr(self.target, "__qualname__", repr(self.target))

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the target's parameters (not `*args` or `**kwargs`)."""
        parameters = signature.parameters.values() if (signature := _signature(self.target)) else ()
        return tuple(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def accepts(self, keyword: str) -> bool:
        """Whether the target takes a keyword argument of that name, by name or among any (`**kwargs`)."""
        parameters = signature.parameters.values() if (signature := _signature(self.target)) else ()
        return keyword in self.parameters or any(p.kind is p.VAR_KEYWORD for p in parameters)

    def with_settings(self, **settings: Any) -> Component:
        return dataclasses.replace(self, settings={**self.settings, **settings})

    def without(self, *keys: str) -> Component:
        return dataclasses.replace(self, settings={k: v for k, v in self.settings.items() if k not in keys})

    def check(self, *args: Any, **later: Any) -> None:
        """Everything that can be known before building it, its nested components' too: its arguments (the
        settings and these) bind to its signature, and its declared rules (`argument_rules`) hold for them."""
        for nested in _components_in(self.settings):
            nested.check()
        self._bind(args, {**self.settings, **later}, partially=self.partial)

    def build(self, *args: Any, **later: Any) -> Any:
        """The target called with `args`, its settings (nested components built first) and `later`, which win
        over settings of the same name (a config node among them is built as a setting would be); a nested
        `_partial_: true` node gives its functools.partial instead."""
        later = {key: _built(_nested(_plain(value), f"{self.group}.{key}")) for key, value in later.items()}
        kwargs = {**{key: _built(value) for key, value in self.settings.items()}, **later}
        self._bind(args, kwargs, partially=self.partial)
        if self.partial:
            return functools.partial(self.target, *args, **kwargs)
        try:
            built = self.target(*args, **kwargs)
        except (ValueError, TypeError) as error:  # it refused the values it was given: the user's to change
            raise UserError(str(error) or f"{self.group}: {self.name} refused its settings") from error
        if not isinstance(built, self.kind):  # a function's result: what a class says by being one
            raise UserError(f"{self.group}: {self.name} returned a {_name(type(built))}, not a {_name(self.kind)}")
        return built

    def _bind(self, args: tuple, kwargs: dict, partially: bool) -> None:
        signature = _signature(self.target)
        if signature is None:  # some built-in classes have none to check against: their call will tell
            return
        try:
            bound = signature.bind_partial(*args, **kwargs) if partially else signature.bind(*args, **kwargs)
        except TypeError as error:  # an argument it does not take, or one it needs and did not get
            raise UserError(f"{self.group}: {self.name} {error}; `--cfg job` shows its settings") from None
        rules = getattr(self.target, "argument_rules", None)
        if rules:
            bound.apply_defaults()
            given = {key: (bound.arguments[key], rule) for key, rule in rules.items() if key in bound.arguments}
            require(self.group, **given)


def component(config: Any, group: str, kind: type = object) -> Component:
    """The component a config node (OmegaConf's or plain values, as a checkpoint keeps them) names by `_target_`,
    imported and checked to be a `kind`; nothing is built."""
    config = _plain(config)
    if not isinstance(config, dict) or not config.get("_target_"):
        raise UserError(f"{group}: no _target_ names what to build; `--cfg job` shows its settings")
    settings = {key: value for key, value in config.items() if key not in ("_target_", "_partial_")}
    nested = {key: _nested(value, f"{group}.{key}") for key, value in settings.items()}
    return Component(group, import_target(config["_target_"], group, kind), nested, kind)


def build(config: Any, group: str, kind: type = object, *args: Any, **later: Any) -> Any:
    """`component(config, group, kind).build(*args, **later)`: what the node names, built now."""
    return component(config, group, kind).build(*args, **later)


def _plain(config: Any) -> Any:
    """A config node as plain values, its interpolations resolved; anything else as it is."""
    if not OmegaConf.is_config(config):
        return config
    try:
        return OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:  # a `???` the user was to fill in, e.g. data.root
        raise UserError(f"Missing mandatory value: {error.full_key}") from error


def _nested(value: Any, where: str) -> Any:
    """A setting with the `_target_` nodes inside it (at any depth of dicts and lists) as components."""
    if isinstance(value, dict):
        if "_target_" in value:
            return dataclasses.replace(component(value, where), partial=bool(value.get("_partial_")))
        return {key: _nested(v, f"{where}.{key}") for key, v in value.items()}
    if isinstance(value, list):
        return [_nested(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _components_in(value: Any) -> list[Component]:
    if isinstance(value, Component):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [c for item in items for c in _components_in(item)]


def _built(value: Any) -> Any:
    if isinstance(value, Component):
        return value.build()
    if isinstance(value, dict):
        return {key: _built(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_built(v) for v in value]
    return value


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _signature(target: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None
