"""A sweep's summary: `summary.csv`, `summary.md` and `summary.png` at its root, from every job's `metrics.json`,
rewritten after each job by the `SweepSummary` Hydra callback (conf/hydra/default.yaml), which also locks the
sweep folder while its sweep runs. A grid's jobs are ranked by the objective, with groups of jobs that differ only
in `seed` or in `data.fold` (k-fold cross-validation) as mean ± standard deviation; a search's picture is drawn by
run/search_plot.py.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import statistics
from pathlib import Path

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments.core.atomic import written_atomically
from experiments.core.errors import UserError, exit_for
from experiments.core.run_dir import Metrics, Objective, RunDir, this_jobs_sweep_dir
from experiments.run.search_plot import plot_search, space_of, trial_params

log = logging.getLogger(__name__)
# The overrides that repeat a job rather than change it: its jobs are one group, reported as mean ± std.
REPEATS = {"seed": "seed", "data.fold": "fold"}
# Best first: a pruned trial (a search stopped it early, run/trial.py) ranks after the completed, not as a failure.
ORDER = {"completed": 0, "pruned": 1, "failed": 2, "unfinished": 3}

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


def repeat_of(override: str) -> str | None:
    """`seed` for `seed=3`, `fold` for `data.fold=2`: what a job repeats another over; None for any other override."""
    key = override.lstrip("+~").partition("=")[0]
    return REPEATS.get(key)


def seed_groups(rows: list[dict], metrics: list[str]) -> list[dict]:
    """The jobs that differ only in `seed` or `data.fold`, as groups, best mean objective first (none when no two
    jobs do):
    per metric the mean and sample standard deviation over the group's completed jobs, and their number.
    Each job's row gets its group's name and objective figures too (`group`, `group_n`, `group_mean`, ...)."""
    members: dict[str, list[dict]] = {}
    for row in rows:
        name = " ".join(o for o in row["differs"].split() if repeat_of(o) is None) or "(all)"
        members.setdefault(name, []).append(row)
    if all(len(jobs) == 1 for jobs in members.values()):
        return []
    groups = []
    for name, jobs in members.items():
        done = [job for job in jobs if job["status"] == "completed"]
        group = {"job": name, "differs": name, "status": "completed" if done else jobs[0]["status"], "n": len(done)}
        group["over"] = sorted({kind for job in jobs for o in job["differs"].split() if (kind := repeat_of(o))})
        numbers = sorted(job["job"] for job in jobs)
        group["jobs"] = sorted(numbers, key=lambda n: int(n) if n.isdigit() else math.inf)
        group["error"] = None if done else jobs[0]["error"]
        group["objective_metric"], group["objective_mode"] = jobs[0]["objective_metric"], jobs[0]["objective_mode"]
        group["members"] = [job["objective"] for job in done if job["objective"] is not None]  # drawn as dots
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
    over = sorted({kind for group in groups for kind in group["over"]}, key=list(REPEATS.values()).index)
    keys = " or ".join(f"`{key}`" for key, kind in REPEATS.items() if kind in over)
    lines = [
        "",
        f"Over {' and '.join(f'{kind}s' for kind in over)}: {len(groups)} {'group' if len(groups) == 1 else 'groups'}"
        f" of jobs that differ only in {keys}, best first; mean ± standard deviation over each group's completed"
        " jobs (n).",
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
    for position, row in zip(positions, rows, strict=True):  # a group's jobs (its seeds, its folds) as dots
        members = row.get("members", [])
        axes.scatter(members, [position] * len(members), color="black", s=10, zorder=3)
    for position, row in zip(positions, rows, strict=True):
        text = f" {row['status']}: {row['error']}"
        if row["status"] in ("completed", "pruned") and row["objective"] is not None:
            text = f" {row['objective']:.4f}" + (" (pruned)" if row["status"] == "pruned" else "")
        if "n" in row and row["status"] == "completed":
            text += f" ± {row['objective std'] or 0.0:.4f} (n={row['n']})"
        colour = "black" if row["status"] == "completed" else colours.get(row["status"], "black")
        right = max([row["objective"] or 0.0, (row["objective"] or 0.0) + (row.get("objective std") or 0.0)])
        right = max([right, *row.get("members", [])])  # the text after the bar, its spread and its dots
        axes.text(right, position, text[:70], va="center", fontsize=8, color=colour)
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.invert_yaxis()
    metric = next((f"{r['objective_metric']} ({r['objective_mode']})" for r in rows if r["objective_metric"]), "")
    axes.set_xlabel(metric)
    over = " and ".join(f"{kind}s" for kind in REPEATS.values() if any(kind in r.get("over", ()) for r in rows))
    kind = (f"group over {over}" if len(rows) == 1 else f"groups over {over}") if rows and "n" in rows[0] else "jobs"
    axes.set_title(f"{len(rows)} {kind}, best first")
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
