"""An Optuna search as a Hydra sweeper: ask the study for a trial, run it as a job through Hydra's launcher, tell
the study how it ended. `hydra_plugins/experiments_search` is the plugin Hydra finds; this is what it runs.

    python -m experiments hparams_search=digits_mlp
    python -m experiments hparams_search=digits_mlp hydra.sweeper.n_trials=50 'model.width=choice(64,1024)'
    python -m experiments hparams_search=digits_mlp hydra/sweeper/pruner=median
    python -m experiments resume=outputs/train/multiruns/<sweep>        # on after a crash: run/resume.py

The study lives in a database (`hydra.sweeper.storage`, by default `study.db` in the sweep folder), so it
outlives the process: trial `n` runs in job folder `<sweep>/<n>`, and the job reports to its trial through
the storage (run/trial.py), whichever launcher ran it. How a job ended is read from its `metrics.json`, the
record the summary reads too, so the study, the summary and the job agree: completed (its objective),
pruned, or failed. Trials left running by a search that was cut off are run again first, in their own
folders, where a job goes on from its last checkpoint (run/sweep.py). Several workers (each its own sweep folder)
may pull trials from one study; a dead worker's trial goes to another (run/handover.py).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.core.atomic import written_atomically
from experiments.core.errors import UserError
from experiments.core.run_dir import Metrics, RunDir
from experiments.run.handover import SWEEP_DIR, Heartbeats, continued_from, fail_stale, retried
from experiments.run.search_space import SearchSpace, as_override_value, search_space
from experiments.run.study import default_storage, open_storage, open_study, shown

log = logging.getLogger(__name__)


class Search:
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str = "maximize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        params: DictConfig | dict | None = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
    ) -> None:
        for group, value in (("sampler", sampler), ("pruner", pruner)):
            if isinstance(value, str):  # `hydra.sweeper.pruner=median` replaces the option's settings with a word
                raise UserError(
                    f"hydra.sweeper.{group}={value}: choose a {group} with hydra/sweeper/{group}={value} (a config"
                    f" group); its settings are then hydra.sweeper.{group}.<key>"
                )
        self.sampler, self.pruner, self.direction = sampler, pruner, str(direction)
        self.study_name, self.storage_url = study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.extra: dict[int, list[str]] = {}  # trial number -> overrides of its own (where it continues from)
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        from optuna.trial import TrialState

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            space = search_space(self.params, arguments)
            if not space.distributions:
                raise UserError("a search with nothing to search: give hydra.sweeper.params or a sweep such as a=1,2")
            url = str(self.storage_url) if self.storage_url else default_storage(sweep_dir)
            name = str(self.study_name or sweep_dir.name)
            storage = open_storage(url, self.heartbeat_interval, self.grace_period)
            study = open_study(storage, name, self.direction, space.as_json(), self.sampler, self.pruner)
        except UserError:
            if not any(path.is_dir() for path in sweep_dir.iterdir()):  # no job ever ran: leave no folder behind
                shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # what `resume=<sweep>` reads back
        # Each job finds its study through these: its trial is its job number (run/trial.py).
        where = [
            f"hydra.sweeper.storage={as_override_value(url)}",
            f"hydra.sweeper.study_name={as_override_value(name)}",
        ]
        # Trials of this sweep folder still running were cut off with an earlier session: only one process runs a
        # sweep folder (run/summary.py locks it). Another folder's trials in a shared study are its own business.
        here = str(sweep_dir.resolve())
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        waiting = [trial for trial in running if trial.user_attrs.get(SWEEP_DIR) == here]
        self.heartbeats = Heartbeats(storage, self.heartbeat_interval)
        self.study_id = storage.get_study_id_from_name(name)
        if waiting:
            log.info(f"study {name}: running {len(waiting)} trial(s) again that an earlier session left unfinished")
            self.heartbeats.beat([self.trial_id(t) for t in waiting])  # theirs now, before another worker fails them
        log.info(f"study {name} in {shown(url)}: {self.n_trials} trials, {len(study.trials)} there already")
        while True:
            fail_stale(study)  # trials of workers that stopped beating: failed and queued again (run/handover.py)
            room = self.room(study)
            batch = waiting[: self.n_jobs]
            waiting = waiting[self.n_jobs :]
            while len(batch) < self.n_jobs and room > 0:
                with warnings.catch_warnings():  # Optuna expects `optimize` to beat; here `Heartbeats` does
                    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                    trial = study.ask(space.distributions)
                trial.set_user_attr(SWEEP_DIR, here)
                last = continued_from(storage, self.study_id, self.trial_id(trial))
                self.extra[trial.number] = [f"resume={as_override_value(str(last))}"] if last else []
                batch.append(trial)
                room -= 1
            if not batch:
                break
            self.run_trials(study, space, where, batch)
        self.write_results(study, space, sweep_dir)

    def room(self, study) -> int:
        """How many trials are still to be asked for. Running trials count as taken: this folder's left from a
        cut-off session (run first) and other workers' (another sweep folder on the same study), so that workers
        pulling from one study stop together; two asking at the same moment may still run one trial more between
        them. A failed trial that another retries is not counted, its retry is; a queued retry (WAITING) is not
        taken, since the next `ask` takes it."""
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        trials = study.get_trials(deepcopy=False)
        again = retried(trials)
        return self.n_trials - sum(t.state in counted and t.number not in again for t in trials)

    def run_trials(self, study, space: SearchSpace, where: list[str], trials: list) -> None:
        """Run the trials as jobs numbered by their trial numbers, then tell the study how each ended."""
        numbers = [trial.number for trial in trials]
        jobs = [[*space.overrides(trial.params), *where, *self.extra.get(trial.number, [])] for trial in trials]
        self.validate_batch(jobs)
        with self.heartbeats.beating([self.trial_id(trial) for trial in trials]):
            if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
                returns = list(self.launcher.launch(jobs, initial_job_idx=numbers[0]))
            else:  # not consecutive (after a crash, or other workers asked between): number == folder, one by one
                pairs = zip(numbers, jobs, strict=True)
                returns = [self.launcher.launch([job], initial_job_idx=n)[0] for n, job in pairs]
        stopped = None
        for number, job_return in zip(numbers, returns, strict=True):
            from hydra.core.utils import JobStatus

            if job_return.status != JobStatus.COMPLETED:
                stopped = stopped or job_return  # a stop signal, not a failure (run_job records failures): left
                continue  # running, so that `resume=` runs it again
            self.tell(study, number, Path(job_return.hydra_cfg.hydra.runtime.output_dir))
        if stopped is not None:
            stopped.return_value  # noqa: B018 - raises the job's exception, as Hydra's own sweeper does

    def trial_id(self, trial) -> int:
        return self.heartbeats.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def validate_batch(self, jobs: list[list[str]]) -> None:
        """Compose each job's config here first: a key that does not exist is one line before anything runs."""
        from hydra.plugins.sweeper import Sweeper

        Sweeper.validate_batch_is_legal(self, jobs)

    @staticmethod
    def tell(study, number: int, job_dir: Path) -> None:
        from optuna.trial import TrialState

        run_dir = RunDir(job_dir)
        metrics = Metrics.read(run_dir.metrics_file) if run_dir.metrics_file.is_file() else None
        if metrics is not None and metrics.status == "completed" and metrics.objective.value is not None:
            study.tell(number, metrics.objective.value)
        elif metrics is not None and metrics.status == "pruned":
            study.tell(number, state=TrialState.PRUNED)
        else:
            study.tell(number, state=TrialState.FAIL)

    def write_results(self, study, space: SearchSpace, sweep_dir: Path) -> None:
        """`optimization_results.yaml`: the best trial's parameters, as overrides take them, and its value."""
        try:
            best = study.best_trial
        except ValueError:  # no trial completed
            return
        results = {
            "name": study.study_name,
            "best_trial": best.number,
            "best_params": {space.keys[k]: v for k, v in best.params.items() if k in space.keys},
            "best_value": best.value,
        }
        with written_atomically(sweep_dir / "optimization_results.yaml") as temporary:
            OmegaConf.save(OmegaConf.create(results), temporary)
