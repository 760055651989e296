"""`python -m experiments.predict`: a trained run's predictions for new image files, texts, or a split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.commands.predict import main
from tests.conftest import best_checkpoint, run_cli


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def predicted(tmp_path: Path, capsys, *arguments: str) -> list[dict]:
    out = tmp_path / "predictions.csv"
    main([*arguments, "--out", str(out)])
    assert f"in {out}" in capsys.readouterr().out
    return rows_of(out)


@pytest.mark.slow  # the command line in a subprocess: the full tier
def test_a_split_reproduces_the_runs_test_accuracy(finished_run, tmp_path):
    run_dir, metrics = finished_run
    out = tmp_path / "test.csv"
    result = run_cli(str(run_dir), "--split", "test", "--out", str(out), cwd=tmp_path, module="experiments.predict")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(out)
    classes = [str(c) for c in range(10)]  # the digits have no names: their ids
    assert list(rows[0]) == ["input", "label", "predicted", "probability", *(f"p_{c}" for c in classes)]
    assert len(rows) == 270 and [row["input"] for row in rows] == [str(i) for i in range(270)]
    correct = sum(row["label"] == row["predicted"] for row in rows)
    assert correct / len(rows) == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)
    for row in rows:
        probabilities = [float(row[f"p_{c}"]) for c in classes]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert float(row["probability"]) == max(probabilities) == float(row[f"p_{row['predicted']}"])


def test_image_files_are_predicted_as_the_same_images_in_the_split(finished_run, tmp_path, capsys):
    # The digits' test images written as PNG files (their 0..16 pixel values kept as they are): read back,
    # they must give the very probabilities the split gives.
    from omegaconf import OmegaConf

    from experiments.data import DigitsDataModule

    run_dir, _ = finished_run
    data = DigitsDataModule(
        **{k: v for k, v in OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.items() if k != "_target_"}
    )
    data.setup()
    images, labels = data.splits["test"]
    folder = tmp_path / "images"
    for i, (image, label) in enumerate(zip(images[:40], labels[:40], strict=True)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / str(int(label)) / f"{i:03d}.png")
    from_files = predicted(tmp_path, capsys, str(run_dir), str(folder))
    from_split = {int(row["input"]): row for row in predicted(tmp_path, capsys, str(run_dir), "--split", "test")}
    assert len(from_files) == 40
    for row in from_files:
        i = int(Path(row["input"]).stem)
        assert row["predicted"] == from_split[i]["predicted"] and row["probability"] == from_split[i]["probability"]
    one = sorted(folder.rglob("*.png"))[0]
    (single,) = predicted(tmp_path, capsys, str(run_dir), str(one))
    assert single["input"] == str(one)


def test_an_image_of_another_size_and_colour_is_converted_as_the_training_images_were(finished_run, tmp_path, capsys):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((64, 48, 3), 200, dtype=np.uint8)).save(big)
    (row,) = predicted(tmp_path, capsys, str(finished_run[0]), str(big))
    assert 0.0 < float(row["probability"]) <= 1.0


def error_line(capsys, *arguments: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(arguments))
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.endswith("(EXPERIMENTS_DEBUG=1 shows the traceback)")
    return error


def test_bad_inputs_are_one_line(finished_run, tmp_path, capsys):
    run_dir = str(finished_run[0])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert error_line(capsys, run_dir, str(broken)).startswith(f"error: {broken} is not a readable image")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error_line(capsys, run_dir, str(empty)).startswith(f"error: {empty} holds no image files")
    assert error_line(capsys, run_dir, str(tmp_path / "gone.png")).startswith("error: ")
    assert error_line(capsys, run_dir).startswith("error: give the inputs to predict")
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text\ngreat film\n")
    assert error_line(capsys, run_dir, str(reviews)).startswith(
        f"error: {reviews} holds texts, but this run was trained on images: give image files or a folder"
    )
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    error = error_line(capsys, run_dir, "--split", "test", "--out", str(a_file / "predictions.csv"))
    assert error.startswith(f"error: cannot write the predictions to {a_file / 'predictions.csv'}: ")
    assert a_file.read_text() == "not a folder"


def test_texts_from_a_csv_or_jsonl_are_encoded_with_the_runs_vocabulary(tmp_path, capsys):
    import json

    from omegaconf import OmegaConf

    from experiments.core.config import compose
    from experiments.run.task import train
    from tests.fixtures import NEGATIVE, POSITIVE, write_imdb

    write_imdb(tmp_path / "data")
    run_dir = tmp_path / "run"
    settings = ["data=imdb", "data.seq_len=40", "data.batch_size=16", "model=mlp", "optimizer.lr=0.01"]
    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={run_dir}"]
    cfg = compose([*paths, *settings, "trainer.max_epochs=10", "logger=none", "test=false"])
    train(cfg)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    texts = [" ".join(POSITIVE * 2), " ".join(NEGATIVE * 2), "the film was a film"]
    reviews = tmp_path / "reviews.csv"
    with open(reviews, "w", newline="") as file:
        csv.writer(file).writerows([["id", "review"], *([i, text] for i, text in enumerate(texts))])
    rows = predicted(tmp_path, capsys, str(run_dir), str(reviews), "--text-column", "review")
    assert list(rows[0]) == ["input", "predicted", "probability", "p_negative", "p_positive"]
    assert [row["predicted"] for row in rows[:2]] == ["positive", "negative"]
    lines = tmp_path / "reviews.jsonl"
    lines.write_text("\n".join(json.dumps({"text": text}) for text in texts) + "\n")
    assert [row["predicted"] for row in predicted(tmp_path, capsys, str(run_dir), str(lines))] == [
        row["predicted"] for row in rows
    ]
    error = error_line(capsys, str(run_dir), str(reviews))  # no column "text" in it
    assert error.startswith(f"error: {reviews} has no column 'text' (it has id, review); choose one with --text-")
    assert error_line(capsys, str(run_dir), str(tmp_path / "reviews")).startswith(
        "error: this run was trained on texts"
    )


def test_a_checkpoint_whose_net_cannot_be_imported_is_one_line(finished_run, capsys):
    import torch

    run_dir, _ = finished_run
    checkpoint = torch.load(best_checkpoint(run_dir), weights_only=True)
    checkpoint["hyper_parameters"]["net"]["_target_"] = "gone_package.nets.Wide"  # a package since uninstalled
    moved = run_dir / "checkpoints" / "net-gone.ckpt"
    torch.save(checkpoint, moved)
    assert error_line(capsys, str(moved), "--split", "test") == (
        "error: model._target_='gone_package.nets.Wide' cannot be imported: no module named 'gone_package'"
        "  (EXPERIMENTS_DEBUG=1 shows the traceback)"
    )
    moved.unlink()
