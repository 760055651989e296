"""The dashboards of a text run: a confusion matrix and a table of misclassified reviews, read back from TensorBoard."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.train import train
from tests.fixtures import FILLER, write_imdb


def test_a_text_run_shows_misclassified_reviews_as_a_table(make_config, tmp_path: Path):
    write_imdb(tmp_path / "data")
    # A learning rate too small to learn anything in one epoch: there are misclassified reviews to show.
    cfg = make_config(
        "data=imdb",
        f"data.data_dir={tmp_path / 'data'}",
        "data.download=false",
        "model=mlp",
        "optimizer.lr=1e-7",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
    )
    train(cfg)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])
    (table,) = events.Tensors("test/misclassified/text_summary")[-1:]
    text = table.tensor_proto.string_val[0].decode()
    lines = text.splitlines()
    assert lines[0] == "| true | predicted | probability | review (first 60 words) |"
    rows = [line.split(" | ") for line in lines[2:]]
    assert 1 <= len(rows) <= 16
    for true, predicted, _, review in rows:
        assert {true.strip("| "), predicted} <= {"negative", "positive"} and true.strip("| ") != predicted
        assert set(review.rstrip(" |").split()) & set(FILLER)  # the review's own words, decoded


def test_images_are_drawn_every_n_epochs_and_after_the_last(make_config, tmp_path: Path):
    cfg = make_config(
        "model=mlp",
        "trainer.max_epochs=5",
        "trainer.limit_train_batches=2",
        "trainer.accelerator=cpu",
        "callbacks.dashboards.images_every_n_epochs=2",
        "test=false",
    )
    train(cfg)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    drawn = [image.step for image in events.Images("val/confusion_matrix")]
    assert drawn == [4, 8, 10]  # after epochs 2, 4 and the last, 5 (two steps per epoch)
