"""A sweep's summary from its jobs' records: jobs that differ only in their seed are also reported as groups,
with the mean, standard deviation and count of each metric. (Sweeps run through the CLI: test_sweeps.py.)"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from PIL import Image

from experiments.core.run_dir import Metrics, Objective, RunDir
from experiments.run.summary import write_summary

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


def test_a_searchs_summary_ranks_by_the_objective_names_the_swept_keys_rounded_and_draws_the_search(tmp_path):
    from omegaconf import OmegaConf, open_dict

    from experiments.core.config import compose

    # The search's record, as the sweeper saves it: its space is the params plus the command line's sweeps.
    cfg = compose(["hparams_search=digits_mlp"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["hparams_search=digits_mlp", "model.width=choice(8,16)"]
    OmegaConf.save(cfg, tmp_path / "multirun.yaml")
    fixed = ["hparams_search=digits_mlp", "model.depth=1", "model.dropout=0.25", "data.batch_size=32"]
    trials = [(0.001151888789941251, 8, 0.91), (0.0003, 16, 0.85), (0.02, 16, 0.88), (0.0004, 8, None)]
    for number, (lr, width, accuracy) in enumerate(trials):
        job(tmp_path, number, [*fixed, f"optimizer.lr={lr}", f"model.width={width}"], accuracy)
    pruned = RunDir(tmp_path / "3")  # stopped after its first epoch
    Metrics(Objective("val/acc", "max", 0.2), val={"val/acc": 0.2}, epochs=1, status="pruned").write(
        pruned.metrics_file
    )

    markdown = write_summary(tmp_path)
    lines = markdown.splitlines()
    assert lines[0] == "4 jobs: 3 completed, 1 pruned, 0 failed, 0 unfinished; ranked by val/acc (max)"
    assert lines[1] == f"all jobs: {' '.join(sorted(fixed))}"
    header = next(line for line in lines if line.startswith("| job |"))
    assert header.startswith("| job | overrides | objective | last val/acc | test/acc | epochs |")
    rows = [line for line in lines if line[:4] in ("| 0 ", "| 1 ", "| 2 ", "| 3 ")]
    assert [row.split(" | ")[0] for row in rows] == ["| 0", "| 2", "| 1", "| 3"]  # best first, the pruned one last
    assert rows[0].startswith("| 0 | optimizer.lr=0.001152 model.width=8 | 0.9100 | 0.9100 |")  # the swept keys only
    assert rows[-1].endswith("| 1 |  | pruned |")
    with Image.open(tmp_path / "summary.png") as image:  # the search's figure (12 in wide), not a grid's bars (8 in)
        assert image.size[0] == 12 * 90 and image.size[1] > 2 * 3.6 * 90
