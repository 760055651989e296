"""summary.png of a search: what the trials found and what mattered, from the jobs' records (run/summary.py).

    top left    the objective of each trial by its number, the best so far as a line; pruned trials as orange
                crosses (their objective when stopped), failed ones as red ticks on the axis
    top right   each parameter's importance (Optuna's fANOVA over the completed trials)
    below       the objective against each parameter, on a log axis where the search was on a log scale

Drawn from the same rows as summary.md, and the space from the search's own config (`multirun.yaml`), so it
needs neither the study's storage nor the process that ran the search.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.run.search_space import SearchSpace, search_space

SWEEPER = "hydra_plugins.experiments_search.OptunaSweeper"
COLOURS = {"completed": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "unfinished": "tab:grey"}


def space_of(sweep_dir: Path) -> SearchSpace | None:
    """The space the search in `sweep_dir` searched, as its multirun.yaml records it; None for a grid."""
    record = sweep_dir / "multirun.yaml"
    if not record.is_file():
        return None
    hydra = OmegaConf.load(record).hydra
    if hydra.sweeper.get("_target_") != SWEEPER:
        return None
    params = OmegaConf.to_container(hydra.sweeper.params) if hydra.sweeper.get("params") else {}
    return search_space(params, list(hydra.overrides.task))


def trial_params(overrides: list[str], space: SearchSpace) -> dict[str, Any]:
    """A job's values of the searched parameters, read from its overrides as Hydra reads them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.value() for o in parsed if o.key_or_group in space.distributions}


@contextmanager
def quiet_optuna():
    """An in-memory study for the importances logs its creation: not worth a line after every job."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def importances(rows: list[dict], space: SearchSpace, maximise: bool) -> dict[str, float]:
    """fANOVA importance of each parameter over the completed trials; none while fewer than two completed."""
    import optuna

    completed = [r for r in rows if r["status"] == "completed" and r["objective"] is not None]
    if len(completed) < 2:
        return {}
    with quiet_optuna():
        study = optuna.create_study(direction="maximize" if maximise else "minimize")
        for row in completed:
            params = row["params"]
            if set(params) != set(space.distributions):
                continue
            distributions = {k: space.distributions[k] for k in params}
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=distributions, value=row["objective"])
            )
        try:
            return optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # too few distinct trials for the evaluator
            return {}


def plot_search(rows: list[dict], space: SearchSpace, metric: str, maximise: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(space.distributions)
    columns = 3
    below = math.ceil(len(names) / columns)
    figure = plt.figure(figsize=(12, 3.6 * (1 + below)), layout="constrained")
    grid = figure.add_gridspec(1 + below, columns)

    trials = figure.add_subplot(grid[0, :2])
    numbered = sorted((r for r in rows if r["job"].isdigit()), key=lambda r: int(r["job"]))
    for status in ("completed", "pruned"):
        shown = [r for r in numbered if r["status"] == status and r["objective"] is not None]
        trials.scatter(
            [int(r["job"]) for r in shown],
            [r["objective"] for r in shown],
            c=COLOURS[status],
            marker="o" if status == "completed" else "x",
            label=f"{status} ({len(shown)})",
        )
    best, steps = None, []
    for row in numbered:
        if row["status"] == "completed" and row["objective"] is not None:
            value = row["objective"]
            best = value if best is None else (max(best, value) if maximise else min(best, value))
        steps.append((int(row["job"]), best))
    drawn = [(n, b) for n, b in steps if b is not None]
    if drawn:
        trials.step(*zip(*drawn, strict=True), where="post", color="black", linewidth=1, label="best so far")
    failed = [int(r["job"]) for r in numbered if r["status"] in ("failed", "unfinished")]
    if failed:
        trials.plot(
            failed,
            [0] * len(failed),
            "|",
            color=COLOURS["failed"],
            markersize=12,
            transform=trials.get_xaxis_transform(),
            label=f"failed or unfinished ({len(failed)})",
        )
    trials.xaxis.get_major_locator().set_params(integer=True)
    trials.set_xlabel("trial")
    trials.set_ylabel(metric)
    trials.set_title(f"{len(numbered)} trials")
    trials.legend(fontsize=8)

    weights = importances(rows, space, maximise)
    ranked = sorted(weights, key=weights.get)
    importance = figure.add_subplot(grid[0, 2])
    importance.barh(ranked, [weights[k] for k in ranked], color="tab:blue")
    importance.set_title("importance (fANOVA)" if weights else "importance: too few completed trials")
    importance.tick_params(axis="y", labelsize=8)

    for index, name in enumerate(names):
        axes = figure.add_subplot(grid[1 + index // columns, index % columns])
        distribution = space.distributions[name]
        categorical = hasattr(distribution, "choices")
        for status in ("completed", "pruned"):
            shown = [r for r in rows if r["status"] == status and r["objective"] is not None and name in r["params"]]
            x = [r["params"][name] for r in shown]
            if categorical:
                x = [distribution.choices.index(v) for v in x]
            axes.scatter(
                x,
                [r["objective"] for r in shown],
                c=COLOURS[status],
                marker="o" if status == "completed" else "x",
                s=18,
            )
        if categorical:
            axes.set_xticks(range(len(distribution.choices)), [str(c) for c in distribution.choices], fontsize=8)
        elif getattr(distribution, "log", False):
            axes.set_xscale("log")
        axes.set_xlabel(name)
        axes.set_ylabel(metric, fontsize=8)
    figure.savefig(path, format="png", dpi=90)
    plt.close(figure)
