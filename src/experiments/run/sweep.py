"""Sweeps that survive their failures: every job leaves `metrics.json`, the sweep root a summary of them all.

    python -m experiments -m model=mlp,cnn,rnn data=digits,mnist        # a grid
    python -m experiments hparams_search=digits_mlp                     # an Optuna search (run/search.py)
    python -m experiments -m hydra/launcher=joblib model=mlp,cnn,rnn    # jobs in parallel

Hydra's launchers run a whole batch, then re-raise the first job error and skip `on_multirun_end`, so
a summary written only at the end is lost with the first failure. So a sweep job never raises:
`run_job` records the failure (status and one-line error) in the job's `metrics.json` and returns
None, which every sweeper accepts (Optuna marks the trial failed, where a NaN would crash it), and
the `SweepSummary` callback (run/summary.py) rewrites `summary.csv`, `summary.md` and `summary.png` after every
job from all the `metrics.json` files under the sweep root. `fail_fast=true` stops at the first failure.
A job whose folder already holds a `metrics.json` ended in an earlier session of the sweep (`resume=<sweep>`,
run/resume.py) and is not run again.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.core.errors import Interrupted, classify
from experiments.core.run_dir import Metrics, Objective, RunDir, this_jobs_sweep_dir

log = logging.getLogger(__name__)


def run_job(task: Callable[[DictConfig], float], cfg: DictConfig) -> float | None:
    """Run one sweep job; a failure or a non-finite objective is recorded and returns None instead of raising."""
    share_cores_with_parallel_jobs(HydraConfig.get().launcher)
    give_each_parallel_job_a_gpu(HydraConfig.get().launcher, this_jobs_sweep_dir())
    number, started = HydraConfig.get().job.num, time.perf_counter()
    run_dir = RunDir(Path(cfg.paths.output_dir))

    def failed(line: str, bug: BaseException | None = None) -> None:
        log.error(f"job {number} failed: {line}", exc_info=bug)  # a bug keeps its traceback, in train.log too
        record_failure(run_dir, cfg, line, time.perf_counter() - started)

    if run_dir.metrics_file.is_file():
        # It ended in an earlier session of this sweep (`resume=<sweep>`, run/resume.py): its record stands.
        recorded = Metrics.read(run_dir.metrics_file)
        log.info(f"job {number} ended ({recorded.status}) in an earlier session of this sweep: not run again")
        return recorded.objective.value if recorded.status == "completed" else None
    if run_dir.attempted_marker.exists():
        # Started again after it was cut off (SLURM requeued it, submitit resubmitted it): on from its last
        # checkpoint. Without one it would start from its first epoch over its own files.
        last = run_dir.last_checkpoint()
        if not last.is_file():
            failed("cut off (timed out or preempted) and started again; not run a second time from scratch")
            return None
        log.info(f"job {number} was cut off: resuming from {last}")
        cfg.resume = str(last)
    run_dir.attempted_marker.touch()
    try:
        objective = task(cfg)
    except Exception as error:
        failure = classify(error)
        requeued = error.signum == getattr(signal, "SIGUSR1", None) if isinstance(error, Interrupted) else False
        if isinstance(error, Interrupted) and error.resume_from and not requeued:  # SLURM starts a requeued job itself
            # Ctrl+C or SIGTERM stops the sweep, not just this job; the sweep goes on from where it stopped.
            sweep = str(this_jobs_sweep_dir())
            raise Interrupted(error.signum, f"{error.where} in job {number}", resume_from=sweep) from error
        if failure.status == "interrupted":
            raise  # Ctrl+C or SIGTERM stops the sweep, not just this job
        failed(failure.line, bug=error if failure.traceback else None)
        if cfg.fail_fast:
            from experiments.run.summary import write_summary

            write_summary(this_jobs_sweep_dir())  # Hydra's end-of-job hook will not run
            # The traceback of a bug is in the log already.
            print(f"error: job {number} failed: {failure.line}  (fail_fast=true)", file=sys.stderr, flush=True)
            sys.exit(failure.exit_code)  # SystemExit passes Hydra's per-job error capture
        return None
    if not math.isfinite(objective):
        failed(f"the objective {cfg.objective} is {objective}")
        return None
    return objective


def record_failure(run_dir: RunDir, cfg: DictConfig, error: str, seconds: float) -> None:
    """Mark the job failed in its metrics.json, keeping what the run measured before it failed."""
    if run_dir.metrics_file.is_file():
        metrics = Metrics.read(run_dir.metrics_file)
    else:
        metrics = Metrics(Objective(cfg.objective, cfg.objective_mode), wall_seconds=round(seconds, 3))
        metrics.tags, metrics.notes = list(cfg.get("tags") or []), cfg.get("notes") or ""
    metrics.status, metrics.error, metrics.objective.value = "failed", error, None
    metrics.write(run_dir.metrics_file)


def parallel_jobs(launcher: DictConfig) -> int:
    """How many jobs run at once: 1 unless joblib runs them side by side (its -1 means one per core)."""
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.n_jobs)
    return max(1, usable_cores() + 1 + n_jobs if n_jobs < 0 else n_jobs)


def share_cores_with_parallel_jobs(launcher: DictConfig) -> None:
    """Jobs run side by side by joblib split the cores between them instead of each taking them all."""
    parallel = parallel_jobs(launcher)
    if parallel == 1:
        return
    import torch

    cores = usable_cores()
    torch.set_num_threads(max(1, cores // parallel))
    log.info(f"{parallel} jobs at once on {cores} cores: {torch.get_num_threads()} torch threads per job")


_gpu_slot: FileLock | None = None  # held by this process (a joblib worker) for its life


def give_each_parallel_job_a_gpu(launcher: DictConfig, sweep_dir: Path) -> None:
    """Jobs run side by side on a machine with several GPUs: each worker process takes a free slot (0 to
    jobs-1, a lock file the system releases if the worker dies) and sees one GPU, slot modulo the GPUs, through
    CUDA_VISIBLE_DEVICES, set before CUDA starts in it. A worker keeps its slot for the jobs that follow."""
    global _gpu_slot
    parallel = parallel_jobs(launcher)
    if _gpu_slot is not None or parallel == 1:  # before counting GPUs: every job of every sweep comes here
        return
    gpus = visible_gpus()
    if len(gpus) < 2:
        return
    _gpu_slot, slot = claim_slot(sweep_dir / ".gpu-slots", parallel)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    log.info(f"{parallel} jobs at once on {len(gpus)} GPUs: this worker has slot {slot}, GPU {gpus[slot % len(gpus)]}")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them. Counting them does not start CUDA
    (torch asks NVML), so the variable can still be narrowed afterwards."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [gpu.strip() for gpu in named.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def claim_slot(folder: Path, slots: int) -> tuple[FileLock, int]:
    """The first free slot of `slots`, waiting for one if all are taken (more workers than jobs at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(slots):
            lock = FileLock(folder / f"slot-{slot}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            return lock, slot
        time.sleep(0.5)


def usable_cores() -> int:
    """The cores this process may run on: its affinity where the system has one (Linux), else all of them."""
    if hasattr(os, "sched_getaffinity"):  # not on macOS or Windows
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
