"""The recipes' results table (docs/results.md): each recipe run over several seeds, mean ± std of its test
accuracy beside the published or measured reference it is held against.

    python benchmarks/results.py                                   # every recipe, seeds 0 1 2, then docs/results.md
    python benchmarks/results.py --recipes mnist_mlp imdb_mlp      # some of them
    python benchmarks/results.py --from-runs outputs/results/<time>/<recipe> ...   # runs made before, any recipe
    python benchmarks/results.py --quick --out /tmp/results.md     # each recipe briefly: the pipeline, not the figures

Each recipe is one sweep of the command line, `python -m experiments -m experiment=<recipe> seed=0,1,2`, so a
recipe's figure is what a user gets from that command; the sweep's summary groups the seeds (sweep.py).
Extra arguments are passed on to every sweep (e.g. `trainer.precision=bf16-mixed`) and shown in the table;
the sweeps stay under outputs/results/ for a later `--from-runs`, which reads sweeps and single runs alike, merges
those of one recipe (seeds run at different times) and lists every recipe, the ones without runs as not measured.
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

from experiments.config import config_dir
from experiments.runs import Metrics, RunDir

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


def recipes() -> list[str]:
    return sorted(path.stem for path in (config_dir() / "experiment").glob("*.yaml"))


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
    done = [Metrics.read(r.metrics_file) for r in runs if r.metrics_file.is_file()]
    done = [m for m in done if m.status == "completed" and "test/acc" in m.test]
    accuracies = [m.test["test/acc"] for m in done]
    return {
        "n": len(accuracies),
        "of": len(runs),
        "mean": statistics.fmean(accuracies) if accuracies else None,
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "seconds": statistics.fmean(m.wall_seconds for m in done if m.wall_seconds) if done else None,
        "overrides": shared_overrides(overrides),
    }


def recipe_of(run_dir: Path) -> str:
    """The recipe a sweep or run was made with (its `experiment=` override), else the folder's name."""
    overrides = next(run_dir.glob("**/.hydra/overrides.yaml"), None)
    chosen = [o for o in (OmegaConf.load(overrides) if overrides else []) if o.startswith("experiment=")]
    return chosen[0].split("=", 1)[1] if chosen else run_dir.name


def shared_overrides(files: list[Path]) -> list[str]:
    where = ("experiment=", "seed=", "hydra.", "paths.")
    chosen = [{o for o in OmegaConf.load(path) if not o.startswith(where)} for path in files]
    return sorted(set.intersection(*chosen)) if chosen else []


def as_markdown(rows: dict[str, dict | None], machine: str, when: str, command: str) -> str:
    lines = [
        "# Results",
        "",
        f"Test accuracy on each dataset's official test split, mean ± standard deviation over seeds (n runs),"
        f" and the wall time of one run (mean), with whatever else shared the machine then. {machine}, {when}."
        f" Regenerated by `{command}`.",
        "",
        "| recipe | test accuracy | n | time per run | target | reference | overrides |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, row in rows.items():
        target, reference = REFERENCES.get(recipe, ("—", "—"))
        if row is None:
            lines.append(f"| `{recipe}` | not measured | — | — | {target} | {reference} | — |")
            continue
        accuracy = "failed" if row["mean"] is None else f"{100 * row['mean']:.2f} %"
        if row["std"] is not None:
            accuracy += f" ± {100 * row['std']:.2f}"
        seconds = f"{row['seconds']:.0f} s" if row["seconds"] is not None else "—"
        overrides = " ".join(f"`{o}`" for o in row["overrides"]) or "—"
        cells = [f"`{recipe}`", accuracy, f"{row['n']}/{row['of']}", seconds, target, reference, overrides]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=None, help="recipe names (default: all in conf/experiment)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--from-runs", nargs="+", type=Path, help="sweep or run directories to read instead of running")
    parser.add_argument("--quick", action="store_true", help="each recipe for a few batches: a check of the pipeline")
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path, default=root / "docs" / "results.md")
    parser.add_argument("--runs", type=Path, default=root / "outputs" / "results", help="where the sweeps are kept")
    args, extra = parser.parse_known_args()
    rows: dict[str, dict | None] = {}
    if args.from_runs:
        by_recipe: dict[str, list[Path]] = {}
        for run_dir in args.from_runs:
            by_recipe.setdefault(recipe_of(run_dir), []).append(run_dir)
        rows = {recipe: figures(by_recipe[recipe]) if recipe in by_recipe else None for recipe in recipes()}
        rows |= {recipe: figures(dirs) for recipe, dirs in by_recipe.items() if recipe not in rows}
    else:
        started = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        for recipe in args.recipes or recipes():
            sweep_dir = args.runs / started / recipe
            run_recipe(recipe, args.seeds, sweep_dir, (QUICK if args.quick else []) + extra)
            rows[recipe] = figures([sweep_dir])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python " + " ".join(["benchmarks/results.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(as_markdown(rows, cpu(), when, command))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
