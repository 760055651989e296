"""The Optuna search of `experiments` as a Hydra sweeper (`hydra/sweeper=optuna`, conf/hydra/sweeper/optuna.yaml).

Hydra instantiates sweepers only from the `hydra_plugins` namespace package and imports every module in it at
start, so this module stays thin and light: it imports neither Optuna nor the package's logic until a search
starts (experiments/run/search.py does the work).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    """Hands the search to experiments.run.search.Search; Hydra passes the config's values as arguments, the sampler
    and the pruner already built from their `_target_`s."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.search = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from experiments.run.search import Search

        self.search = Search(**self.settings)
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
