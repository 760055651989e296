"""The dashboards: a text run's confusion matrix and table of misclassified reviews read back from TensorBoard,
when images are drawn, the final metrics of a resumed run, and how the misclassified images are laid out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.run.task import train
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


def test_a_resumed_run_with_nothing_left_to_train_puts_its_final_metrics_in_the_hparams_entry(tmp_path: Path):
    # Lightning keeps logged values in memory only: the validation before the stop comes from the checkpoint,
    # and the HParams entry is to show it as the uninterrupted run's does. No best-model file: no best score.
    from experiments.core.config import compose

    common = ["model=mlp", "trainer.max_epochs=1", "trainer.accelerator=cpu", "test=false"]
    common.append("callbacks.model_checkpoint=null")
    train(compose([*common, f"paths.output_dir={tmp_path / 'whole'}"]))
    last = tmp_path / "whole" / "checkpoints" / "last.ckpt"
    train(compose([*common, f"paths.output_dir={tmp_path / 'again'}", f"resume={last}"]))
    val = json.loads((tmp_path / "whole" / "metrics.json").read_text())["val"]
    assert {"val/loss", "val/acc"} <= set(val)
    events = EventAccumulator(str(tmp_path / "again" / "tensorboard"))
    events.Reload()
    final = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("final/")}
    assert final == pytest.approx({f"final/{key.replace('/', '_')}": value for key, value in val.items()})


@pytest.mark.parametrize("channels", [1, 3])
def test_misclassified_images_are_tiled_under_their_labels(channels: int):
    # Ten normalised 3x4 images (fewer than two full rows of eight): each is stretched back to 0..1 and sits
    # in its own tile, in order, under its true class and "→predicted" with the predicted class's probability.
    import torch

    from experiments.reporting.dashboards import examples_figure

    x = torch.linspace(-2, 3, 10 * channels * 3 * 4).view(10, channels, 3, 4)
    y = torch.arange(10) % 3
    probabilities = torch.nn.functional.one_hot((y + 1) % 3, 3).float() * 0.5 + 0.5 / 3
    figure = examples_figure(x, y, probabilities, ["a", "b", "c"])
    (axes,) = figure.axes
    grid = torch.from_numpy(axes.images[0].get_array().data)
    if channels == 1:
        grid = grid.unsqueeze(-1)
    band, height, width, gap = 1, 3, 4, 1  # label room of half an image's height, a gap of an eighth of its width
    assert grid.shape == (2 * (band + height), 8 * (width + gap), channels)
    for k in range(16):
        row, column = divmod(k, 8)
        tile = grid[row * (band + height) + band :][:height, column * (width + gap) :][:, :width]
        if k < 10:
            stretched = (x[k] - x[k].min()) / (x[k].max() - x[k].min())  # over all its channels at once
            torch.testing.assert_close(tile, stretched.permute(1, 2, 0))
        else:
            assert (tile == 1).all()  # white where there is no example
    labels = [text.get_text() for text in axes.texts]
    names = "abc"
    assert labels == [f"{names[t]}\n→{names[(t + 1) % 3]} {0.5 + 0.5 / 3:.2f}" for t in y.tolist()]
    for k, text in enumerate(axes.texts):  # centred on its tile, its bottom at the top of the image
        row, column = divmod(k, 8)
        centre, bottom = column * (width + gap) + width / 2, row * (band + height) + band - 0.5
        assert text.get_position() == (centre, bottom) and (text.get_ha(), text.get_va()) == ("center", "bottom")
