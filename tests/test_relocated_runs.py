"""A run folder is relocatable: fetched from a cluster or shared with a colleague, it still evaluates and
predicts from its own files, and a checkpoint written before the package's modules moved into layer folders
still loads (tests/files/run_before_the_layout, whose metrics.json names its checkpoint by an absolute path on
the machine it ran on)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from experiments.core.run_dir import RunDir
from tests.conftest import run_cli

EARLIER_RUN = Path(__file__).parent / "files" / "run_before_the_layout"


def test_metrics_json_names_the_best_checkpoint_relative_to_the_run(finished_run):
    run_dir, metrics = finished_run
    assert metrics["best_checkpoint"].startswith("checkpoints/best-")
    assert RunDir(run_dir).best_checkpoint() == run_dir / metrics["best_checkpoint"]


def test_a_recorded_path_outside_the_run_stays_absolute(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.recorded(str(tmp_path / "elsewhere" / "best.ckpt")) == str(tmp_path / "elsewhere" / "best.ckpt")
    assert run.resolve(str(tmp_path / "elsewhere" / "best.ckpt")) == tmp_path / "elsewhere" / "best.ckpt"


def test_a_copied_run_reads_its_own_checkpoint_not_the_originals(tmp_path):
    copy = shutil.copytree(EARLIER_RUN, tmp_path / "copy")
    recorded = json.loads((copy / "metrics.json").read_text())["best_checkpoint"]
    assert Path(recorded).is_absolute() and not Path(recorded).exists()  # the machine it ran on
    assert RunDir(copy).best_checkpoint() == copy / "checkpoints" / "best-epoch001.ckpt"


@pytest.mark.slow
def test_a_run_written_before_the_layout_evaluates_and_predicts_from_a_copy(tmp_path):
    copy = shutil.copytree(EARLIER_RUN, tmp_path / "fetched" / "run")
    recorded = json.loads((copy / "metrics.json").read_text())["test"]["test/acc"]

    evaluated = run_cli("evaluate", str(copy), cwd=tmp_path, module="experiments")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"test accuracy  {recorded:.4f}" in evaluated.stdout  # the same weights on the same split
    assert f"checkpoint     {copy / 'checkpoints' / 'best-epoch001.ckpt'}" in evaluated.stdout

    out = tmp_path / "predictions.csv"
    predicted = run_cli(str(copy), "--split", "test", "--out", str(out), cwd=tmp_path, module="experiments.predict")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    accuracy = sum(row["label"] == row["predicted"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(recorded, abs=1e-6)


@pytest.mark.slow
def test_a_moved_run_predicts_and_resumes_from_its_new_place(tmp_path):
    (tmp_path / "a").mkdir()
    trained = run_cli(
        "model=mlp", "model.width=16", "data=digits", "trainer.max_epochs=1", "logger=csv", cwd=tmp_path / "a"
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run_dir,) = (tmp_path / "a" / "outputs" / "train" / "runs").iterdir()
    moved = shutil.move(run_dir, tmp_path / "b" / "run")  # the original is gone
    assert not run_dir.exists()

    out = tmp_path / "predictions.csv"
    predicted = run_cli("predict", str(moved), "--split", "test", "--out", str(out), cwd=tmp_path, module="experiments")
    assert predicted.returncode == 0, predicted.stderr[-2000:]

    resumed = run_cli(f"resume={moved}", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((Path(moved) / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["best_checkpoint"].startswith("checkpoints/")
    assert torch.load(Path(moved) / metrics["best_checkpoint"], weights_only=True)["epoch"] in (0, 1)
