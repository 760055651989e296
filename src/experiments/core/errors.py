"""What a failure means to the person who ran the command: the one place that decides it.

Every entry point (a run, a sweep job, evaluation) and every writer of checkpoints hands a failure to
`classify`, which says how it ends: its status, one line that says what happened, the exit code, and
whether the traceback is shown. The rules:
- the user's mistake (bad input, Hydra's and OmegaConf's config errors, a folder that cannot be written,
  a full disk): one line naming what is wrong and what to do, exit code 2, no traceback;
- a loss that became NaN or infinite: one line, exit code 1 (the run failed, not the user);
- a stop signal: the line that says where training stopped and how to continue, 128 + the signal's number,
  as a shell reports a process that signal ended;
- anything else is a bug: its type and line, exit code 1, and its traceback.
`EXPERIMENTS_DEBUG=1` shows the traceback of every failure.

The bottom layer: it imports nothing of this package, so anything may import it.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user: reported as one line with exit code 2, never as a traceback."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run stops and counts as failed (a sweep records it so)."""


class Interrupted(Exception):
    """A stop signal ended training: the line says where, and how to continue (or why nothing was saved)."""

    def __init__(self, signum: int, where: str, resume_from: str | None = None, why_not: str = "") -> None:
        self.signum, self.where, self.resume_from = signum, where, resume_from  # a sweep says it its own way
        name = signal.Signals(signum).name
        if resume_from:
            then = f"; continue with: python -m experiments resume={resume_from}"
        else:
            then = f"; nothing was saved ({why_not})" if why_not else ""
        super().__init__(f"stopped by {name} {where}{then}")


# Not bugs but the machine's state: a folder the user cannot write to, a full disk.
ENVIRONMENT_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


# What stops writing to a path the user named: theirs to change, as a full disk is. (Met anywhere else,
# a missing file or a directory in the way may be a bug.)
PATH_ERRORS = ENVIRONMENT_ERRORS | {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def first_line(text: str) -> str:
    """An error message's first non-blank line: what a one-line report shows of it."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is the user's to fix: bad input, Hydra's, OmegaConf's and Lightning's config errors, a
    folder that cannot be written, a full disk."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, UserError | HydraException | OmegaConfBaseException):  # some of Hydra's are OSErrors too
        return True
    # Lightning's settings it cannot work with (a checkpoint's `monitor` that nothing logs, say) are the user's.
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(error, MisconfigurationException):
        return True
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRORS


def describe(error: BaseException) -> str:
    """One line for a failure: what is wrong and, for the user's mistakes, what is allowed."""
    from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRORS:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot write{where}: {error.strerror}; choose a writable place (paths.data_dir, hydra.run.dir)"
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options is not None:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option}: no such option; choose from {', '.join(sorted(error.options))}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override '{error.override}': {first_line(error.message)}"
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        return f"{cause.full_key}: no such key; `--cfg job` lists the keys, +{cause.full_key}=VALUE adds one"
    if isinstance(error, InstantiationException) and cause is not None:
        error = cause
    if isinstance(error, ImportError) and not isinstance(error, ModuleNotFoundError):  # Hydra's, over three lines
        return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return first_line(str(error)) or type(error).__name__


@dataclass(frozen=True)
class Failure:
    """How a failure ends: `status` for records (metrics.json, a sweep's summary), `line` for people."""

    status: str  # "failed" or "interrupted"
    line: str
    exit_code: int
    traceback: bool
    users_mistake: bool = False


def classify(error: BaseException) -> Failure:
    """The one mapping from a failure to its status, line, exit code and whether its traceback is shown."""
    debug = bool(os.environ.get("EXPERIMENTS_DEBUG"))
    if isinstance(error, Interrupted):
        return Failure("interrupted", str(error), 128 + error.signum, traceback=debug)
    if isinstance(error, KeyboardInterrupt):  # Ctrl+C before training started, or after it ended
        return Failure("interrupted", "interrupted before training started; nothing was saved", 130, traceback=debug)
    if isinstance(error, NonFiniteLoss):
        return Failure("failed", str(error), 1, traceback=debug)
    if is_user_error(error):
        return Failure("failed", describe(error), 2, traceback=debug, users_mistake=True)
    return Failure("failed", f"{type(error).__name__}: {describe(error)}", 1, traceback=True)


def exit_for(error: BaseException) -> NoReturn:
    """End the process as `classify` says: one line on stderr and its exit code, or the traceback of a bug."""
    failure = classify(error)
    if failure.traceback:
        raise error
    hint = "  (EXPERIMENTS_DEBUG=1 shows the traceback)" if failure.users_mistake else ""
    label = "" if failure.status == "interrupted" else "error: "
    print(f"{label}{failure.line}{hint}", file=sys.stderr, flush=True)
    sys.exit(failure.exit_code)
