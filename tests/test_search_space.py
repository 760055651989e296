"""Hydra's sweep syntax as Optuna distributions, and a trial's values back as overrides Hydra reads the same."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from experiments.core.errors import UserError
from experiments.run.search_space import as_override_value, search_space


def test_each_sweep_form_maps_to_its_distribution():
    params = {
        "optimizer.lr": "tag(log, interval(0.0003, 0.03))",
        "model.width": "choice(64, 128)",
        "model.depth": "range(1, 4)",
        "model.dropout": "interval(0.0, 0.5)",
        "data.batch_size": "32,64",
        "x": "range(0.1, 0.5, 0.1)",
        "n": "tag(log, range(1, 65))",
        "trainer.max_epochs": "3",
    }
    space = search_space(params, ["+model.pooling=choice(mean,'l 2')"])
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(0.0003, 0.03, log=True)
    assert d["model.width"] == CategoricalDistribution([64, 128])
    assert d["model.depth"] == IntDistribution(1, 3)  # Hydra's range excludes its stop; Optuna's bounds are inclusive
    assert d["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert d["data.batch_size"] == CategoricalDistribution([32, 64])
    assert d["x"] == FloatDistribution(0.1, 0.4, step=0.1)
    assert d["n"] == IntDistribution(1, 64, log=True)
    assert d["model.pooling"] == CategoricalDistribution(["mean", "l 2"])
    assert space.fixed == ["trainer.max_epochs=3"]
    assert space.keys["model.pooling"] == "+model.pooling"


def test_the_command_line_replaces_a_param_of_the_same_key():
    space = search_space({"model.width": "choice(64, 128)"}, ["model.width=choice(8,16)", "seed=3"])
    assert space.distributions == {"model.width": CategoricalDistribution([8, 16])}
    assert space.fixed == ["seed=3"]


@pytest.mark.parametrize(
    "value", [64, 0.0003, 1e-05, True, None, "mean", "l 2", "it's", "64", "true", "a,b", "${x}", "choice(1)"]
)
def test_a_trials_value_reads_back_as_the_same_value(value):
    (override,) = OverridesParser.create().parse_overrides([f"key={as_override_value(value)}"])
    assert not override.is_sweep_override()
    assert override.value() == value and type(override.value()) is type(value)


def test_overrides_of_a_trial_name_every_searched_key():
    space = search_space({"a": "choice(x, 'y z')", "+b": "interval(0, 1)"}, ["c=1"])
    # Hydra reads the space as part of an unquoted value.
    assert space.overrides({"a": "y z", "b": 0.25}) == ["c=1", "a=y z", "+b=0.25"]


@pytest.mark.parametrize(
    "line, says",
    [
        ("a=shuffle(1,2)", "tag(log, ...) only"),
        ("a=tag(log, choice(1,2))", "needs a range or an interval"),
        ("a=tag(log, interval(0, 1))", "starts above 0"),
        ("a=interval(1, 1)", "start < end"),
        ("a=range(3, 1)", "the range is empty"),
        ("a=choice([1,2],[3])", "not lists or dicts"),
        ("a=tag(log, range(1, 9, 2))", "steps by 1"),
    ],
)
def test_a_sweep_a_sampler_cannot_use_is_one_line(line, says):
    with pytest.raises(UserError) as error:
        search_space({}, [line])
    assert says in str(error.value) and "\n" not in str(error.value)
