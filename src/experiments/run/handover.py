"""A trial whose worker died goes to another worker, which continues it from its last checkpoint.

Optuna's own mechanism does the bookkeeping: while a worker runs trials it records their heartbeats in the
storage (`Heartbeats`, a thread of the worker, since ask/tell has no `optimize` loop to do it); before it asks
for a trial, a worker fails the running trials whose heartbeat is older than the grace period
(`optuna.storages.fail_stale_trials`, atomic: one worker wins), and `RetryHeartbeatStaleTrialCallback` queues a
copy of each, same values, which the next `ask` of any worker takes. That copy is a new trial with its own
number and folder; `continued_from` finds the dead trial's last checkpoint for it (its folder is in the trial's
`sweep_dir` attribute), so the work done is not lost. The dead trial stays failed in the study but does not
count towards `n_trials` (`retried`): its copy does.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.core.run_dir import RunDir

log = logging.getLogger(__name__)
SWEEP_DIR = "sweep_dir"  # a trial's user attribute: the sweep folder its job runs in


def quietly(function, *args):
    """Optuna marks its heartbeat functions experimental and warns at every call."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return function(*args)


def fail_stale(study) -> None:
    from optuna.storages import fail_stale_trials

    quietly(fail_stale_trials, study)


def retried(trials: Iterable) -> set[int]:
    """The trials another trial retries (their workers died): failed, but not to be counted as finished."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return {n for t in trials for n in quietly(RetryHeartbeatStaleTrialCallback.retry_history, t)}


def continued_from(storage, study_id: int, trial_id: int) -> Path | None:
    """For a trial that retries a dead one: the dead trial's last checkpoint, if it saved one."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = storage.get_trial(trial_id)
    number = quietly(RetryHeartbeatStaleTrialCallback.retried_trial_number, frozen)
    if number is None:
        return None
    history = quietly(RetryHeartbeatStaleTrialCallback.retry_history, frozen)
    for earlier in reversed(history):  # the latest attempt got furthest
        dead = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, earlier))
        folder = dead.user_attrs.get(SWEEP_DIR)
        last = RunDir(Path(folder) / str(earlier)).last_checkpoint() if folder else None
        if last is not None and last.is_file():
            log.info(f"trial {frozen.number} takes up trial {earlier}, whose worker stopped: from {last}")
            return last
    log.info(f"trial {frozen.number} takes up trial {number}, whose worker stopped: from the start (no checkpoint)")
    return None


class Heartbeats:
    """Records the heartbeats of the trials this worker runs, every `interval` seconds, from a thread."""

    def __init__(self, storage, interval: int | None) -> None:
        self.storage, self.interval = storage, interval

    def beat(self, trial_ids: Iterable[int]) -> None:
        for trial_id in trial_ids:
            self.storage.record_heartbeat(trial_id)

    @contextmanager
    def beating(self, trial_ids: list[int]) -> Iterator[None]:
        if not self.interval:
            yield
            return
        self.beat(trial_ids)
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(self.interval):
                self.beat(trial_ids)

        thread = threading.Thread(target=run, name="trial-heartbeats", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
