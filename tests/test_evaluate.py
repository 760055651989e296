"""`python -m experiments.evaluate`: a finished run's checkpoint tested again, and its predictions written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.evaluate import evaluate, main
from experiments.train import train
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    from experiments.config import compose

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose([f"paths.output_dir={run_dir}", "model=mlp", "trainer.max_epochs=2"])
    train(cfg)
    (run_dir / ".hydra").mkdir()  # what Hydra writes beside every run
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_evaluate_reproduces_the_runs_test_accuracy_and_writes_predictions(finished_run, tmp_path):
    run_dir, metrics = finished_run
    predictions = tmp_path / "predictions.csv"
    result = run_cli(str(run_dir), "--predict", str(predictions), cwd=tmp_path, module="experiments.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = metrics["test"]["test/acc"]
    assert f"test accuracy  {accuracy:.4f}" in result.stdout
    assert f"checkpoint     {metrics['best_checkpoint']}" in result.stdout

    with open(predictions, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["id", "label", "predicted", *(f"p{c}" for c in range(10))]
    assert [int(row["id"]) for row in rows] == list(range(len(rows)))
    assert len(rows) == 270  # the digits test split: 15 % of 1,797
    correct = sum(row["label"] == row["predicted"] for row in rows)
    assert correct / len(rows) == pytest.approx(accuracy, abs=1e-6)
    for row in rows:
        probabilities = [float(row[f"p{c}"]) for c in range(10)]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert max(range(10), key=probabilities.__getitem__) == int(row["predicted"])


def test_predictions_come_from_the_test_pass_itself(finished_run, tmp_path, monkeypatch):
    from experiments.models.classifier import Classifier

    def second_pass(*args, **kwargs):
        raise AssertionError("the test split was run through the model a second time")

    monkeypatch.setattr(Classifier, "predict_step", second_pass)
    result = evaluate(finished_run[0], [], tmp_path / "predictions.csv")
    with open(tmp_path / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sum(row["label"] == row["predicted"] for row in rows) / len(rows) == pytest.approx(result["test/acc"])


def test_trainer_predict_gives_the_probabilities_of_the_predictions_file(finished_run, tmp_path):
    import lightning as L
    import torch

    from experiments.evaluate import find_run, load

    run, checkpoint = find_run(finished_run[0])
    _, datamodule, model = load(run, checkpoint, [])
    evaluate(run.path, [], tmp_path / "predictions.csv")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    predicted = torch.cat(trainer.predict(model, datamodule=datamodule))
    with open(tmp_path / "predictions.csv", newline="") as file:
        written = torch.tensor([[float(row[f"p{c}"]) for c in range(10)] for row in csv.DictReader(file)])
    torch.testing.assert_close(predicted, written, atol=1e-6, rtol=0)  # the file keeps six decimals


def test_evaluate_takes_a_checkpoint_file_too(finished_run, capsys):
    run_dir, _ = finished_run
    last = run_dir / "checkpoints" / "last.ckpt"  # the model after the last epoch, not the best one
    main([str(last)])
    expected = evaluate(last, [])  # in this process, as the same model and data: the same figures
    shown = capsys.readouterr().out
    assert f"checkpoint     {last}" in shown and f"test accuracy  {expected['test/acc']:.4f}" in shown


def test_evaluate_explains_a_wrong_path_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'nowhere'}: no such run directory or checkpoint  (EXPERIMENTS_DEBUG=1 shows the traceback)"
    )


def test_evaluate_refuses_a_damaged_checkpoint_in_one_line(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    damaged = run_dir / "checkpoints" / "damaged.ckpt"
    damaged.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:1000])  # a copy cut short
    with pytest.raises(SystemExit) as exit_:
        main([str(damaged)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {damaged} is not a readable checkpoint") and "\n" not in error


def test_evaluate_explains_a_predictions_path_it_cannot_write_in_one_line(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        main([str(run_dir), "--predict", str(a_file / "predictions.csv")])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith(f"error: cannot write the predictions to {a_file / 'predictions.csv'}: ") and "\n" not in error
    )
    assert "give --predict another path" in error and a_file.read_text() == "not a folder"
