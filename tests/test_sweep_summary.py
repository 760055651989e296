"""A sweep's summary from its jobs' records: jobs that differ only in their seed are also reported as groups,
with the mean, standard deviation and count of each metric. (Sweeps run through the CLI: test_sweeps.py.)"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from PIL import Image

from experiments.core.run_dir import Metrics, Objective, RunDir
from experiments.run.sweep import write_summary

ACCURACIES = {"model=mlp": [0.90, 0.92, 0.94], "model=cnn": [0.97, 0.98, 0.99]}


def job(sweep: Path, number: int, overrides: list[str], accuracy: float | None) -> None:
    run = RunDir(sweep / str(number))
    run.overrides_file.parent.mkdir(parents=True)
    run.overrides_file.write_text("".join(f"- {o}\n" for o in overrides))
    objective = Objective("val/acc", "max", accuracy if accuracy is not None else float("nan"))
    if accuracy is None:
        Metrics(objective, status="failed", error="the training loss became nan at step 3").write(run.metrics_file)
    else:
        val, test = {"val/acc": accuracy}, {"test/acc": accuracy - 0.01}
        Metrics(objective, val=val, test=test, epochs=2, wall_seconds=1.0).write(run.metrics_file)


@pytest.fixture
def seeded_sweep(tmp_path) -> Path:
    """model=mlp,cnn seed=0,1,2 and one more mlp job whose seed=3 failed."""
    number = 0
    for model, accuracies in ACCURACIES.items():
        for seed, accuracy in enumerate(accuracies):
            job(tmp_path, number, [model, f"seed={seed}", "trainer.max_epochs=2"], accuracy)
            number += 1
    job(tmp_path, number, ["model=mlp", "seed=3", "trainer.max_epochs=2"], None)
    return tmp_path


def test_jobs_that_differ_only_in_seed_are_reported_as_groups(seeded_sweep):
    markdown = write_summary(seeded_sweep)
    cnn, mlp = (ACCURACIES[m] for m in ("model=cnn", "model=mlp"))
    over_seeds = markdown.split("Over seeds:")[1]
    rows = [line for line in over_seeds.splitlines() if line.startswith("| model=")]
    assert rows[0].startswith(  # the better group first; the failed job in the other is not counted
        f"| model=cnn | 3 | {statistics.fmean(cnn):.4f} ± {statistics.stdev(cnn):.4f} | "
    )
    assert rows[1].startswith(f"| model=mlp | 3 | {statistics.fmean(mlp):.4f} ± {statistics.stdev(mlp):.4f} | ")
    test_mean = statistics.fmean(a - 0.01 for a in mlp)
    assert f"{test_mean:.4f} ± {statistics.stdev(a - 0.01 for a in mlp):.4f}" in rows[1]
    assert rows[1].endswith("| 0 1 2 6 |")  # its jobs, the failed one included

    with open(seeded_sweep / "summary.csv", newline="") as file:
        jobs = {row["job"]: row for row in csv.DictReader(file)}
    assert jobs["1"]["group"] == "model=mlp" and jobs["1"]["group_n"] == "3"
    assert float(jobs["1"]["group_mean"]) == pytest.approx(statistics.fmean(mlp))
    assert float(jobs["4"]["group_std"]) == pytest.approx(statistics.stdev(cnn))
    with Image.open(seeded_sweep / "summary.png") as image:
        assert image.size[0] > 0


def test_without_repeated_seeds_there_are_no_groups(tmp_path):
    for number, (model, accuracies) in enumerate(ACCURACIES.items()):
        job(tmp_path, number, [model, "seed=0"], accuracies[0])
    markdown = write_summary(tmp_path)
    assert "Over seeds" not in markdown
    with open(tmp_path / "summary.csv", newline="") as file:
        assert "group" not in next(csv.reader(file))
