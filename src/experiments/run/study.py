"""A search's Optuna study in its storage: opened by the sweeper that asks and tells, and by each job that
reports to its trial, in whatever process or machine the launcher put it.

    storage: null                              sqlite:///<sweep folder>/study.db, beside the trials' folders
    storage: sqlite:////shared/searches.db     any SQLAlchemy URL Optuna's RDB storage takes
    storage: postgresql://user@host/db         (a database server: workers on many machines)

A storage that cannot be reached or parsed, and a study of the same name that searched another space or in
the other direction, are the user's to fix: one line each.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

from experiments.core.errors import UserError, first_line

log = logging.getLogger(__name__)
SPACE = "search_space"  # the study's user attribute that keeps the space it searches


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def shown(url: str) -> str:
    """The URL as a message may show it: without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: nothing of it can be trusted to hide the password
        return url.split("@")[-1]


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """Optuna's RDB storage at `url`, connected (it creates its tables in an empty database). With a heartbeat
    interval, a trial whose worker stops beating is failed and queued again (run/handover.py)."""
    import optuna
    from optuna.storages import RDBStorage

    # Optuna's lines ("Trial 3 finished with value ...") go where ours go (the console's stdout and the log file),
    # not to stderr through its own handler, where only errors belong.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

    # SQLite: writers wait their turn (the sweeper tells while a job reports) instead of failing at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    heartbeats = {}
    if heartbeat_interval:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)
        heartbeats = {
            "heartbeat_interval": int(heartbeat_interval),
            "grace_period": int(grace_period) if grace_period else None,
            "heartbeat_stale_trial_callback": retry,
        }
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna: a warning at every start
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(url, engine_kwargs=engine, **heartbeats)
            except (IntegrityError, ProgrammingError, OperationalError) as error:
                # Workers started together on an empty database all create its tables; one wins, the others
                # fail (PostgreSQL: a duplicate key; SQLite: "table ... already exists") and find them made when
                # they try again. Any other OperationalError (a file that cannot be opened) is the user's.
                racing = not isinstance(error, OperationalError) or "already exists" in str(error)
                if attempt == 4 or not racing:
                    raise
                time.sleep(0.5 + random.random())
    except (ArgumentError, ValueError) as error:
        raise UserError(f"hydra.sweeper.storage={shown(url)}: not a storage URL ({first_line(str(error))})") from error
    except (SQLAlchemyError, ImportError, OSError) as error:
        raise UserError(
            f"hydra.sweeper.storage={shown(url)}: cannot open it ({first_line(str(error))}); check the URL and that"
            " the database is running and reachable"
        ) from error


def open_study(storage, name: str, direction: str, space: dict[str, str], sampler=None, pruner=None):
    """The study `name`: created, or loaded when it exists, then only if it searches the same space in the same
    direction (a resumed search, or more trials for it)."""
    import optuna

    if direction not in ("maximize", "minimize"):
        raise UserError(f"hydra.sweeper.direction={direction}: choose maximize or minimize")
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if study.direction.name.lower() != direction:
        raise UserError(
            f"study {name!r} in {shown(str(storage.url))} was made to {study.direction.name.lower()}, not to"
            f" {direction}; name another study (hydra.sweeper.study_name) or keep its direction"
        )
    kept = study.user_attrs.get(SPACE)
    if kept is None:
        study.set_user_attr(SPACE, space)
    elif kept != space:
        changed = sorted(set(kept) ^ set(space) | {k for k in set(kept) & set(space) if kept[k] != space[k]})
        raise UserError(
            f"study {name!r} in {shown(str(storage.url))} searched another space (differing: {', '.join(changed)});"
            " name another study (hydra.sweeper.study_name) or search the same space"
        )
    return study


def trial_of(storage, study_name: str, number: int, pruner: Any = None):
    """Trial `number` of the study, to report to from the job that runs it (another process, perhaps)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))
