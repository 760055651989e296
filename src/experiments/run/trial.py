"""A search's job reports to its trial: the objective after every validation, and it stops when the pruner says so.

The sweeper (run/search.py) runs trial `n` as job number `n` and gives each job the study's storage URL and name as
overrides of `hydra.sweeper`, so a job finds its trial through the storage from any process or machine, whatever
launcher started it. The pruner's settings come from the same config (`hydra/sweeper/pruner=median`). A pruned
job stops at the end of that validation, keeps its checkpoints and records `status: pruned` in its metrics.json,
which is what the sweeper then tells the study.
"""

from __future__ import annotations

import logging

import lightning as L
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
SWEEPER = "hydra_plugins.experiments_search.OptunaSweeper"


class ReportToTrial(L.Callback):
    def __init__(self, trial, objective: str) -> None:
        self.trial, self.objective = trial, objective
        self.pruned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.objective)  # the same in every process: logged with sync_dist
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch + 1  # the step a pruner counts: epochs (validations) trained
        prune = False
        if trainer.is_global_zero:  # one report per validation, whatever the number of processes
            self.trial.report(float(value), epoch)  # an epoch reported again (a resumed job) is ignored by Optuna
            prune = self.trial.should_prune()
        # Every process stops, or none: under data parallelism one that went on alone would wait for the others.
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned = trainer.should_stop = True  # this epoch's checkpoints are still written, after this hook
            log.info(f"trial {self.trial.number} pruned after epoch {epoch}: {self.objective} {float(value):.4f}")


def report_to_trial(cfg: DictConfig) -> list[ReportToTrial]:
    """The callback that reports this job to its trial, when the job is a trial of a search; else none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # a run composed in-process (a notebook, a test)
        return []
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    if sweeper.get("_target_") != SWEEPER or not sweeper.get("storage") or hydra.job.get("num") is None:
        return []
    from experiments.run.study import open_storage, trial_of

    storage = open_storage(str(sweeper.storage))
    trial = trial_of(storage, str(sweeper.study_name), int(hydra.job.num), pruner=pruner(cfg, sweeper.pruner))
    return [ReportToTrial(trial, cfg.objective)]


def pruner(cfg: DictConfig, node: DictConfig):
    """The search's pruner, built in the job: its settings may name the job's own keys (`${trainer.max_epochs}`),
    which Hydra's copy of its config for the job cannot resolve alone, so they are resolved beside the job's config."""
    from optuna.pruners import BasePruner

    from experiments.core.build import build

    root = OmegaConf.to_container(cfg, resolve=False)  # a plain copy: the job's config is struct (no new keys)
    root["_search_pruner"] = OmegaConf.to_container(node, resolve=False)
    return build(OmegaConf.create(root)._search_pruner, "hydra.sweeper.pruner", BasePruner)
