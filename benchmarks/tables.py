"""The table recipes against scikit-learn (docs/results.md): the same splits, the same column encoding.

    python benchmarks/tables.py                                  # both recipes, seeds 0 1 2
    python benchmarks/tables.py --seeds 0 --overrides model.width=64   # a variant of each recipe

For each seed, the recipe (`experiment=breast_cancer_mlp`, `experiment=diabetes_mlp`) trains in-process with
`seed=<seed>`, which also chooses the split; scikit-learn's models are fitted on the same encoded rows, twice:
on the training and validation parts together (they need no validation part to choose a checkpoint, so a user
would give them both), and on the training part alone (the rows the MLP learns from); all are scored on the
same test rows. Classification: LogisticRegression and HistGradientBoostingClassifier, accuracy. Regression: Ridge and
HistGradientBoostingRegressor, RMSE and R². Prints a markdown table of mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from machine import cpu

from experiments.core.build import build
from experiments.core.config import compose
from experiments.run.task import train

RECIPES = {"breast_cancer_mlp": "classification", "diabetes_mlp": "regression"}


def baselines(task: str, x, y, x_test, y_test) -> dict[str, dict[str, float]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score, root_mean_squared_error

    if task == "classification":
        models = {"LogisticRegression": LogisticRegression(max_iter=5000), "HistGradientBoosting": None}
        models["HistGradientBoosting"] = HistGradientBoostingClassifier(random_state=0)
        return {name: {"acc": model.fit(x, y).score(x_test, y_test)} for name, model in models.items()}
    models = {"Ridge": Ridge(), "HistGradientBoosting": HistGradientBoostingRegressor(random_state=0)}
    scores = {}
    for name, model in models.items():
        predicted = model.fit(x, y).predict(x_test)
        scores[name] = {"rmse": root_mean_squared_error(y_test, predicted), "r2": r2_score(y_test, predicted)}
    return scores


def one_seed(recipe: str, seed: int, overrides: list[str], folder: Path) -> dict[str, dict[str, float]]:
    task = RECIPES[recipe]
    out = folder / f"{recipe}-{seed}"
    cfg = compose([f"experiment={recipe}", f"seed={seed}", "logger=none", f"paths.output_dir={out}", *overrides])
    started = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    names = ("acc",) if task == "classification" else ("rmse", "r2")
    scores = {"MLP recipe": {name: metrics["test"][f"test/{name}"] for name in names}}
    scores["MLP recipe"] |= {"seconds": seconds, "validation": metrics["objective"]["value"]}
    data = build(cfg.data, "data", L.LightningDataModule)
    data.setup("fit")
    (x, y), (xv, yv), (xt, yt) = (data.splits[s] for s in ("train", "val", "test"))
    both = baselines(task, torch.cat([x, xv]).numpy(), torch.cat([y, yv]).numpy(), xt.numpy(), yt.numpy())
    train_only = baselines(task, x.numpy(), y.numpy(), xt.numpy(), yt.numpy())
    return (
        scores
        | {f"{name} (train + val)": s for name, s in both.items()}
        | {f"{name} (train)": s for name, s in train_only.items()}
    )


def table(recipe: str, runs: list[dict]) -> str:
    metrics = [m for m in runs[0]["MLP recipe"] if m not in ("seconds", "validation")]
    lines = [f"| {recipe} | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for model in runs[0]:
        cells = []
        for metric in metrics:
            values = [run[model][metric] for run in runs]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.4f}{spread}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--overrides", nargs="*", default=[], help="changes to each recipe, key=value")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for recipe in args.recipes:
            runs = [one_seed(recipe, seed, args.overrides, Path(folder)) for seed in args.seeds]
            seconds = [run["MLP recipe"]["seconds"] for run in runs]
            day = datetime.date.today().isoformat()
            print(f"\n{recipe}, seeds {args.seeds}, {' '.join(args.overrides) or 'as shipped'}; {cpu()}, {day}")
            validation = statistics.mean(run["MLP recipe"]["validation"] for run in runs)
            print(f"MLP recipe: {statistics.median(seconds):.1f} s a run (median), best validation {validation:.4f}\n")
            print(table(recipe, runs))


if __name__ == "__main__":
    main()
