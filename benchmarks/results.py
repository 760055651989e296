"""The recipes' results table (docs/results.md): each recipe run over several seeds, mean ± std of its test
accuracy beside the published or measured reference it is held against.

    python benchmarks/results.py                                   # every recipe, seeds 0 1 2, then docs/results.md
    python benchmarks/results.py --recipes mnist_mlp imdb_mlp      # some of them
    python benchmarks/results.py --from-runs outputs/results/<time>/<recipe> ...   # runs made before, any recipe
    python benchmarks/results.py --quick                           # each recipe briefly: the pipeline, not the figures

Each recipe is one sweep of the command line, `python -m experiments -m experiment=<recipe> seed=0,1,2`, so a
recipe's figure is what a user gets from that command; the sweep's summary groups the seeds (run/summary.py).
Extra arguments are passed on to every sweep (e.g. `trainer.precision=bf16-mixed`) and shown in the table;
the sweeps stay under outputs/results/ for a later `--from-runs`, which reads sweeps and single runs alike and
merges those of one recipe (seeds run at different times). The table lists every recipe: the ones measured or
read this time get new rows, the others keep the rows they had, so one recipe can be measured again on its own.
Each row names the machine and the day its runs ended: the day their metrics.json files were written (copy runs
with their times, `cp -a`), the machine this script runs on (runs do not record theirs: read them where they
were made). A recipe never measured is listed as such.
`--quick` writes its table beside its sweeps unless `--out` says otherwise: a pipeline check never replaces
measured rows.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
from pathlib import Path

from machine import cpu
from omegaconf import OmegaConf

from experiments.core.atomic import written_atomically
from experiments.core.config import config_dir
from experiments.core.run_dir import Metrics, RunDir

IMDB_WORD_VECTORS = "88.89 %: word vectors learned with the sentiment, plus a bag of words (Maas et al., 2011)"

# What each recipe is held against: a target (issue-tracked) and a reference with its source.
REFERENCES = {
    "digits_cnn": ("—", "—"),
    "mnist_mlp": (">= 98.70 %", "98.61 %: a plain PyTorch loop, same net, measured here; Keras example MLP 98.40 %"),
    "mnist_cnn": (">= 99.50 %", "99.25 %: Keras example CNN; 99.31 %: a plain 4-epoch PyTorch CNN, measured here"),
    "mnist_rnn": (">= 99.10 %", "—"),
    "cifar10_cnn": (
        ">= 92.0 % (JPEG copy), <= 60 min on a 2-core CPU",
        "94.0 %: the same techniques in 10 epochs on the official files, on a GPU (airbench94, Jordan 2024)",
    ),
    "cifar10_cpu": (">= 85.0 % (JPEG copy), <= 10 min on a 2-core CPU", "—"),
    "cifar10_speedrun": (">= 94.0 % (GPU)", "94.0 %: airbench `train94` (Jordan, 2024)"),
    "imdb_mlp": (">= 92.0 %", "91.6 %: NBSVM uni+bigrams (Wang & Manning, 2012, 91.2 %); TF-IDF + LR 90.7 %"),
    "imdb_cnn": (">= 90.0 %", IMDB_WORD_VECTORS),
    "imdb_rnn": (">= 90.0 %", IMDB_WORD_VECTORS),
}
QUICK = [  # a few batches of one epoch: does every recipe still compose, train, test and report?
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "logger=none",
]


# The table recipes, measured against scikit-learn by benchmarks/tables.py in a section of their own below the table.
TABLE_RECIPES = ("breast_cancer_mlp", "diabetes_mlp")


def recipes() -> list[str]:
    paths = (config_dir() / "experiment").glob("*.yaml")
    return sorted(path.stem for path in paths if path.stem not in TABLE_RECIPES)


def run_recipe(recipe: str, seeds: list[int], sweep_dir: Path, extra: list[str]) -> None:
    command = [sys.executable, "-m", "experiments", "-m", f"experiment={recipe}"]
    command += [f"seed={','.join(map(str, seeds))}", f"hydra.sweep.dir={sweep_dir}", *extra]
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def figures(run_dirs: list[Path]) -> dict:
    """Test accuracy (mean, std, n), wall seconds per run (mean) over the completed runs under these folders
    (sweeps or single runs), and the overrides they share beyond the recipe, the seed and where files go."""
    overrides = sorted(path for run_dir in run_dirs for path in run_dir.glob("**/.hydra/overrides.yaml"))
    runs = [RunDir(path.parents[1]) for path in overrides]
    written = [r.metrics_file for r in runs if r.metrics_file.is_file()]
    done = [Metrics.read(path) for path in written]
    done = [m for m in done if m.status == "completed" and "test/acc" in m.test]
    accuracies = [m.test["test/acc"] for m in done]
    return {
        "n": len(accuracies),
        "of": len(runs),
        "mean": statistics.fmean(accuracies) if accuracies else None,
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "seconds": statistics.fmean(m.wall_seconds for m in done if m.wall_seconds) if done else None,
        "overrides": shared_overrides(overrides),
        "day": max((utc_day(path.stat().st_mtime) for path in written), default="—"),  # when the last one ended
    }


def utc_day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d")


def recipe_of(run_dir: Path) -> str:
    """The recipe a sweep or run was made with (its `experiment=` override), else the folder's name."""
    overrides = next(run_dir.glob("**/.hydra/overrides.yaml"), None)
    chosen = [o for o in (OmegaConf.load(overrides) if overrides else []) if o.startswith("experiment=")]
    return chosen[0].split("=", 1)[1] if chosen else run_dir.name


def shared_overrides(files: list[Path]) -> list[str]:
    where = ("experiment=", "seed=", "hydra.", "paths.")
    chosen = [{o for o in OmegaConf.load(path) if not o.startswith(where)} for path in files]
    return sorted(set.intersection(*chosen)) if chosen else []


COLUMNS = ["recipe", "test accuracy", "n", "time per run", "measured on", "target", "reference", "overrides"]
MEASURED = slice(1, 5)  # the cells a row's runs give; target and reference come from REFERENCES


def measured_cells(row: dict, machine: str) -> list[str]:
    accuracy = "failed" if row["mean"] is None else f"{100 * row['mean']:.2f} %"
    if row["std"] is not None:
        accuracy += f" ± {100 * row['std']:.2f}"
    seconds = f"{row['seconds']:.0f} s" if row["seconds"] is not None else "—"
    overrides = " ".join(f"`{o}`" for o in row["overrides"]) or "—"
    return [accuracy, f"{row['n']}/{row['of']}", seconds, f"{machine}, {row['day']}", overrides]


def kept_cells(table: Path) -> dict[str, list[str]]:
    """The measured cells of each recipe's row in a table this script wrote before (none if it has no file)."""
    kept = {}
    for line in table.read_text().splitlines() if table.is_file() else []:
        cells = [cell.strip() for cell in line.strip("| ").split(" | ")]
        if line.startswith("| `") and len(cells) == len(COLUMNS) and cells[1] != "not measured":
            kept[cells[0].strip("`")] = [*cells[MEASURED], cells[-1]]
    return kept


def sections_below(table: Path) -> str:
    """What follows the table in a file this script wrote before: sections of their own (## ...), kept."""
    text = table.read_text() if table.is_file() else ""
    return text[text.index("\n## ") :] if "\n## " in text else ""


def as_markdown(rows: dict[str, list[str] | None], command: str) -> str:
    lines = [
        "# Results",
        "",
        "Test accuracy on each dataset's official test split, mean ± standard deviation over seeds (n runs), and"
        " the wall time of one run (mean), with whatever else shared the machine then; each row names the machine"
        f" and the day its runs were made. Last updated by `{command}`.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for recipe, measured in rows.items():
        target, reference = REFERENCES.get(recipe, ("—", "—"))
        *figures_, overrides = measured or ["not measured", *["—"] * (MEASURED.stop - MEASURED.start)]
        lines.append("| " + " | ".join([f"`{recipe}`", *figures_, target, reference, overrides]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=None, help="recipe names (default: all in conf/experiment)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--from-runs", nargs="+", type=Path, help="sweep or run directories to read instead of running")
    parser.add_argument("--quick", action="store_true", help="each recipe for a few batches: a check of the pipeline")
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path, help="default: docs/results.md; with --quick, beside its sweeps")
    parser.add_argument("--runs", type=Path, default=root / "outputs" / "results", help="where the sweeps are kept")
    args, extra = parser.parse_known_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = args.out or (args.runs / started / "results.md" if args.quick else root / "docs" / "results.md")
    measured: dict[str, dict] = {}
    if args.from_runs:
        by_recipe: dict[str, list[Path]] = {}
        for run_dir in args.from_runs:
            by_recipe.setdefault(recipe_of(run_dir), []).append(run_dir)
        measured = {recipe: figures(dirs) for recipe, dirs in by_recipe.items()}
    else:
        for recipe in args.recipes or recipes():
            sweep_dir = args.runs / started / recipe
            run_recipe(recipe, args.seeds, sweep_dir, (QUICK if args.quick else []) + extra)
            measured[recipe] = figures([sweep_dir])
    # A pipeline check lists what it ran; a measurement keeps the rows of every recipe it did not measure.
    rows: dict[str, list[str] | None] = {} if args.quick else {recipe: None for recipe in recipes()} | kept_cells(out)
    rows |= {recipe: measured_cells(row, cpu()) for recipe, row in measured.items()}
    command = "python " + " ".join(["benchmarks/results.py", *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(out) as temporary:  # the table now holds rows it read: never leave it half-written
        temporary.write_text(as_markdown(dict(sorted(rows.items())), command) + sections_below(out))
    print(out.read_text())


if __name__ == "__main__":
    main()
