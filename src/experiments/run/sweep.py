"""Sweeps that survive their failures: every job leaves `metrics.json`, the sweep root a summary of them all.

    python -m experiments -m model=mlp,cnn,rnn data=digits,mnist        # a grid
    python -m experiments hparams_search=digits_mlp                     # an Optuna search (run/search.py)
    python -m experiments -m hydra/launcher=joblib model=mlp,cnn,rnn    # jobs in parallel

Hydra's launchers run a whole batch, then re-raise the first job error and skip `on_multirun_end`, so
a summary written only at the end is lost with the first failure. So a sweep job never raises:
`run_job` records the failure (status and one-line error) in the job's `metrics.json` and returns
None, which every sweeper accepts (Optuna marks the trial failed, where a NaN would crash it), and
the `SweepSummary` callback rewrites `summary.csv`, `summary.md` and `summary.png` after every job
from all the `metrics.json` files under the sweep root. `fail_fast=true` stops at the first failure.
A job whose folder already holds a `metrics.json` ended in an earlier session of the sweep (`resume=<sweep>`,
run/resume.py) and is not run again.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments.core.atomic import written_atomically
from experiments.core.errors import Interrupted, UserError, classify, exit_for
from experiments.core.run_dir import Metrics, Objective, RunDir, this_jobs_sweep_dir
from experiments.run.search_plot import plot_search, space_of, trial_params

log = logging.getLogger(__name__)
# Best first: a pruned trial (a search stopped it early, run/trial.py) ranks after the completed, not as a failure.
ORDER = {"completed": 0, "pruned": 1, "failed": 2, "unfinished": 3}


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


_sweep_lock: FileLock | None = None  # held by the launching process for its life


def lock_sweep(sweep_dir: Path) -> None:
    """One process at a time runs a sweep folder (a sweep, or `resume=` of it): two would run the same jobs into
    the same folders. The system drops the lock when the process ends, however it ends."""
    global _sweep_lock
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(sweep_dir / ".sweep.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"{sweep_dir} is being run by another process; wait for it to end, or stop it") from None
    _sweep_lock = lock


class SweepSummary(Callback):
    """Locks the sweep folder at the start; rewrites the sweep's summary after each job (the only hook that survives
    a failed job) and at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            lock_sweep(Path(str(config.hydra.sweep.dir)).resolve())
        except UserError as error:
            exit_for(error)  # SystemExit: Hydra turns a callback's exceptions into warnings and goes on

    def on_job_end(self, config: DictConfig, job_return=None, **kwargs) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # still the job's own config here
            write_summary(this_jobs_sweep_dir())

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if sweep_dir.is_dir():
            table = write_summary(sweep_dir)
            log.info(f"{table}\nsummary        {sweep_dir / 'summary.md'}, summary.csv, summary.png")


def collect(sweep_dir: Path) -> list[dict]:
    """One row per job directory: its overrides and what its metrics.json says (nothing yet: unfinished)."""
    rows = []
    for overrides_file in sweep_dir.glob("**/.hydra/overrides.yaml"):
        run_dir = RunDir(overrides_file.parents[1])
        if run_dir.metrics_file.is_file():
            metrics = Metrics.read(run_dir.metrics_file)
        else:
            metrics = Metrics(Objective(metric="", mode=""), status="unfinished")
        rows.append(
            {
                "job": run_dir.path.relative_to(sweep_dir).as_posix(),
                "status": metrics.status,
                "objective": metrics.objective.value,
                "objective_metric": metrics.objective.metric or None,
                "objective_mode": metrics.objective.mode or None,
                "overrides": list(OmegaConf.load(run_dir.overrides_file)),
                **metrics.val,
                **metrics.test,
                "epochs": metrics.epochs,
                "seconds": metrics.wall_seconds,
                "error": metrics.error,
            }
        )
    return rows


def ranked(rows: list[dict]) -> list[dict]:
    """Completed jobs best first by the objective, then failed, then unfinished ones."""
    maximise = next((r["objective_mode"] == "max" for r in rows if r["objective_mode"]), True)

    def key(row: dict) -> tuple:
        value = row["objective"]
        score = (-value if maximise else value) if value is not None else math.inf
        number = int(row["job"]) if row["job"].isdigit() else math.inf
        return ORDER.get(row["status"], len(ORDER)), score, number, row["job"]

    return sorted(rows, key=key)


def write_summary(sweep_dir: Path) -> str:
    """Write summary.csv, summary.md and summary.png under `sweep_dir`; return the Markdown."""
    with FileLock(sweep_dir / ".summary.lock"):  # one writer at a time: parallel jobs finish together
        rows = ranked(collect(sweep_dir))
        space = space_of(sweep_dir)  # a search's space; None for a grid
        shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
        for row in rows:  # the table and plot show what tells the jobs apart, rounded; the CSV keeps them whole
            row["differs"] = " ".join(rounded(o) for o in row["overrides"] if o not in shared)
            if space is not None:
                row["params"] = trial_params(row["overrides"], space)
            row["overrides"] = " ".join(row["overrides"])
        metrics = {k for r in rows for k in r if k.startswith(("val/", "test/"))}
        metrics = sorted(metrics, key=lambda k: (k.startswith("test/"), k))  # validation first
        groups = seed_groups(rows, ["objective", *metrics])
        columns = ["job", "status", "objective", "overrides", *metrics, "epochs", "seconds", "error"]
        if groups:
            columns[3:3] = ["group", "group_n", "group_mean", "group_std"]
        with written_atomically(sweep_dir / "summary.csv") as temporary, open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        markdown = as_markdown(rows, metrics, sorted(shared)) + groups_as_markdown(groups, metrics)
        with written_atomically(sweep_dir / "summary.md") as temporary:
            temporary.write_text(markdown)
        with written_atomically(sweep_dir / "summary.png") as temporary:
            if space is not None and rows:
                metric = rows[0]["objective_metric"] or "objective"
                plot_search(rows, space, metric, maximise=rows[0]["objective_mode"] != "min", path=temporary)
            else:
                plot(groups or rows, temporary)
    return markdown


def seed_groups(rows: list[dict], metrics: list[str]) -> list[dict]:
    """The jobs that differ only in `seed`, as groups, best mean objective first (none when no two jobs do):
    per metric the mean and sample standard deviation over the group's completed jobs, and their number.
    Each job's row gets its group's name and objective figures too (`group`, `group_n`, `group_mean`, ...)."""
    members: dict[str, list[dict]] = {}
    for row in rows:
        name = " ".join(o for o in row["differs"].split() if not o.lstrip("+~").startswith("seed=")) or "(all)"
        members.setdefault(name, []).append(row)
    if all(len(jobs) == 1 for jobs in members.values()):
        return []
    groups = []
    for name, jobs in members.items():
        done = [job for job in jobs if job["status"] == "completed"]
        group = {"job": name, "differs": name, "status": "completed" if done else jobs[0]["status"], "n": len(done)}
        numbers = sorted(job["job"] for job in jobs)
        group["jobs"] = sorted(numbers, key=lambda n: int(n) if n.isdigit() else math.inf)
        group["error"] = None if done else jobs[0]["error"]
        group["objective_metric"], group["objective_mode"] = jobs[0]["objective_metric"], jobs[0]["objective_mode"]
        for metric in metrics:
            values = [job[metric] for job in done if job.get(metric) is not None]
            mean = statistics.fmean(values) if values else None
            group[metric] = mean
            group[f"{metric} std"] = statistics.stdev(values) if len(values) > 1 else None
        for job in jobs:
            job.update(group=name, group_n=len(done), group_mean=group["objective"], group_std=group["objective std"])
        groups.append(group)
    return ranked(groups)


def groups_as_markdown(groups: list[dict], metrics: list[str]) -> str:
    if not groups:
        return ""

    def cell(group: dict, metric: str) -> str:
        mean, std = group[metric], group[f"{metric} std"]
        if mean is None:
            return ""
        return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"

    header = ["group", "n", "objective", *metrics, "jobs"]
    lines = [
        "",
        f"Over seeds: {len(groups)} {'group' if len(groups) == 1 else 'groups'} of jobs that differ only in `seed`,"
        " best first; mean ± standard deviation over each group's completed jobs (n).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for group in groups:
        values = [group["job"], str(group["n"]), *(cell(group, m) for m in ["objective", *metrics])]
        lines.append("| " + " | ".join([*values, " ".join(group["jobs"])]) + " |")
    return "\n".join(lines) + "\n"


NUMBER = re.compile(r"(?P<key>[^=]+=)(?P<value>-?(\d+\.\d*|\d*\.\d+|\d+)(e[-+]?\d+)?)")


def rounded(override: str) -> str:
    """`optimizer.lr=0.001151888789941251` -> `optimizer.lr=0.001152`: four significant digits for people."""
    match = NUMBER.fullmatch(override)
    if not match or not any(c in match["value"] for c in ".e"):
        return override  # ints and words as they are
    return f"{match['key']}{float(match['value']):.4g}"


def as_markdown(rows: list[dict], metrics: list[str], shared: list[str]) -> str:
    shown = [s for s in ORDER if s != "pruned" or any(r["status"] == s for r in rows)]  # a grid never prunes
    counts = ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in shown)
    objective = next((f"{r['objective_metric']} ({r['objective_mode']})" for r in rows if r["objective_metric"]), "")
    lines = [f"{len(rows)} jobs: {counts}; ranked by {objective}"]
    if shared:
        lines.append(f"all jobs: {' '.join(shared)}")
    best = rows[0] if rows and rows[0]["status"] == "completed" else None
    if best:
        # All its overrides: the parameters that won, including those every job happened to share.
        lines.append(f"best: job {best['job']} {best['overrides']}  {best['objective_metric']} {best['objective']:.4f}")

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "" if value is None else str(value).replace("|", "\\|")

    if objective:
        lines.append(
            f"objective: {objective.split()[0]} of the best checkpoint, what the jobs are ranked by;"
            " last val/…: the last epoch's validation; test/…: the best checkpoint's test"
        )
    named = [f"last {m}" if m.startswith("val/") else m for m in metrics]
    header = ["job", "overrides", "objective", *named, "epochs", "time (s)", "status"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        status = f"failed: {row['error']}" if row["status"] == "failed" else row["status"]
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else ""
        figures = [row["objective"], *(row.get(m) for m in metrics)]
        values = [row["job"], row["differs"], *figures, row["epochs"], seconds, status]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Horizontal bars of the objective, best at the top; pruned, failed and unfinished jobs in orange, red and grey.
    Rows of seed groups (`seed_groups`) are drawn as their means, with their standard deviations."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    labels = [(r["job"] if "n" in r else f"#{r['job']} {r['differs']}")[:60] for r in rows]
    values = [r["objective"] or 0.0 for r in rows]
    colours = {"completed": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "unfinished": "tab:grey"}
    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.4 * max(len(rows), 1)), layout="constrained")
    positions = range(len(rows))
    spread = [r.get("objective std") or 0.0 for r in rows]
    axes.barh(positions, values, xerr=spread, color=[colours.get(r["status"], "black") for r in rows])
    for position, row in zip(positions, rows, strict=True):
        text = f" {row['status']}: {row['error']}"
        if row["status"] in ("completed", "pruned") and row["objective"] is not None:
            text = f" {row['objective']:.4f}" + (" (pruned)" if row["status"] == "pruned" else "")
        if "n" in row and row["status"] == "completed":
            text += f" ± {row['objective std'] or 0.0:.4f} (n={row['n']})"
        colour = "black" if row["status"] == "completed" else colours.get(row["status"], "black")
        axes.text(row["objective"] or 0.0, position, text[:70], va="center", fontsize=8, color=colour)
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.invert_yaxis()
    metric = next((f"{r['objective_metric']} ({r['objective_mode']})" for r in rows if r["objective_metric"]), "")
    axes.set_xlabel(metric)
    axes.set_title(f"{len(rows)} {'groups over seeds' if rows and 'n' in rows[0] else 'jobs'}, best first")
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
