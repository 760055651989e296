"""`data=image_folder`: a folder of class folders, decoded once into a settings-keyed cache (or streamed batch by
batch), split, normalised with its training part's statistics; trained on, and predicted from, image files.
Drawn images always; real CIFAR-10 images written as PNG files where the shared data is present."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.core.config import compose
from experiments.core.errors import UserError
from experiments.data import ImageFolderDataModule
from experiments.data.image_folder import channel_statistics
from experiments.data.image_stream import ImageFiles, UnreadableImage
from experiments.data.images import image_files, read_images
from experiments.run.task import train
from tests.test_datasets import real
from tests.test_reliability_config import error_line_leaving_nothing

SHAPES = ("circle", "square", "stripes")  # the class folders, sorted as the module sorts them


def draw(kind: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB image of one shape whose form and colour tell its class."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    cy, cx = rng.uniform(0.35, 0.65, 2)
    inside = [
        (y - cy) ** 2 + (x - cx) ** 2 < 0.06,
        (abs(y - cy) < 0.22) & (abs(x - cx) < 0.22),
        (np.floor(x * 8) % 2 == 0),
    ][kind]
    image = rng.integers(0, 70, (height, width, 3))
    image[inside] = (200, 40, 40) if kind == 0 else (40, 200, 40) if kind == 1 else (40, 40, 220)
    return image.astype(np.uint8)


def write_shapes(folder: Path, per_class: int, seed: int = 0) -> list[Path]:
    """`per_class` images of each shape in `folder/<shape>/`, of various sizes, as PNG and JPEG files, one of
    them grey and one in a subfolder."""
    rng = np.random.default_rng(seed)
    written = []
    for kind, name in enumerate(SHAPES):
        for i in range(per_class):
            pixels = draw(kind, int(rng.integers(20, 48)), int(rng.integers(20, 48)), rng)
            image = Image.fromarray(pixels).convert("L") if i == 0 else Image.fromarray(pixels)
            path = folder / name / ("nested" if i == 1 else "") / f"{i:03d}.{'jpg' if i % 3 == 2 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            written.append(path)
    return written


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A folder of drawn shapes, 40 of each, for the tests that only read it."""
    root = tmp_path_factory.mktemp("shapes")
    write_shapes(root, 40)
    return root


def module(root: Path, data_dir: Path, **settings) -> ImageFolderDataModule:
    return ImageFolderDataModule(root=str(root), data_dir=str(data_dir), **settings)


def never(*args, **kwargs):
    pytest.fail("decoded the images again")


def test_the_spec_and_class_names_come_from_the_folder_names_without_decoding(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr("experiments.data.image_folder.read_images", never)
    data = module(shapes, tmp_path, image_size=[24, 16], channels=1)
    assert data.spec == {"kind": "image", "shape": [1, 24, 16], "num_classes": 3}
    assert data.class_names == list(SHAPES)
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


def test_a_folder_is_decoded_split_and_normalised_with_its_training_part(shapes, tmp_path):
    data = module(shapes, tmp_path, image_size=16, val_size=0.1, test_size=0.25)
    data.setup()
    sizes = {name: len(y) for name, (_, y) in data.splits.items()}
    assert sizes == {"train": 81, "val": 9, "test": 30}
    x, y = data.splits["train"]
    assert x.shape == (81, 3, 16, 16) and x.dtype == torch.uint8 and set(y.tolist()) == {0, 1, 2}
    assert data.mean == pytest.approx(x.double().mean(dim=(0, 2, 3)).tolist())
    assert data.std == pytest.approx(x.double().std(dim=(0, 2, 3), correction=0).tolist())
    # The same files decoded directly: every split holds exactly the folder's images.
    everything, _ = read_images(image_files(shapes), [3, 16, 16])
    held = torch.cat([data.splits[name][0] for name in ("train", "val", "test")])
    assert sorted(map(bytes, held.flatten(1).numpy())) == sorted(map(bytes, everything.flatten(1).numpy()))
    assert list(shapes.rglob("*.pt")) == []  # the folder is only read: the cache is in data_dir


def test_a_train_and_a_test_folder_make_the_splits(tmp_path):
    write_shapes(tmp_path / "photos" / "train", 10)
    test_files = write_shapes(tmp_path / "photos" / "test", 4, seed=1)
    data = module(tmp_path / "photos", tmp_path / "data", image_size=12, val_size=0.2, test_size=0.9)  # ignored
    data.setup()
    expected, _ = read_images(sorted(test_files), [3, 12, 12])
    assert torch.equal(data.splits["test"][0], expected)  # the test folder, in its files' order
    assert data.splits["test"][1].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [len(data.splits[name][1]) for name in ("train", "val")] == [24, 6]


def test_the_statistics_are_computed_in_chunks_exactly():
    images = torch.randint(0, 256, (2500, 3, 4, 5), dtype=torch.uint8)
    mean, std = channel_statistics(images)
    assert mean == pytest.approx(images.double().mean(dim=(0, 2, 3)).tolist(), rel=1e-12)
    assert std == pytest.approx(images.double().std(dim=(0, 2, 3), correction=0).tolist(), rel=1e-9)


def test_the_cache_is_read_back_and_rebuilt_when_a_setting_or_the_folder_changes(tmp_path, monkeypatch, caplog):
    root = tmp_path / "photos"
    write_shapes(root, 6)
    first = module(root, tmp_path / "data", image_size=16)
    first.setup()
    assert first.cache.path.parent == tmp_path / "data" / "image_folder_cache" and first.cache.path.is_file()

    with monkeypatch.context() as patch:  # a second run decodes nothing
        patch.setattr("experiments.data.image_folder.read_images", never)
        again = module(root, tmp_path / "data", image_size=16)
        again.setup()
    assert all(torch.equal(again.splits[s][0], first.splits[s][0]) for s in ("train", "val", "test"))
    assert again.mean == first.mean and again.std == first.std

    other_size = module(root, tmp_path / "data", image_size=[16, 20])
    other_size.setup()
    assert other_size.cache.path != first.cache.path and other_size.splits["train"][0].shape[-2:] == (16, 20)

    (root / "square" / "004.png").unlink()  # one image fewer
    changed = module(root, tmp_path / "data", image_size=16)
    assert changed.cache.path != first.cache.path
    changed.setup()
    assert sum(len(y) for _, y in changed.splits.values()) == 17


def test_unreadable_files_are_skipped_with_one_warning_or_refused_when_strict(tmp_path, caplog):
    root = tmp_path / "photos"
    write_shapes(root, 5)
    (root / "circle" / "notes.jpg").write_text("not an image")
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with caplog.at_level(logging.WARNING):
        data = module(root, tmp_path / "data", image_size=8)
        data.setup()
    assert sum(len(y) for _, y in data.splits.values()) == 15
    assert "skipped 2 file(s) that are not readable images" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # said again when the cache is read back
        module(root, tmp_path / "data", image_size=8).setup()
    assert "2 file(s) in" in caplog.text and "are left out" in caplog.text

    with pytest.raises(UserError) as error:
        module(root, tmp_path / "strict", image_size=8, strict=True).setup()
    assert str(error.value).startswith(f"{root / 'circle' / 'notes.jpg'} is not a readable image")
    assert "\n" not in str(error.value) and not (tmp_path / "strict").exists()  # nothing half-written


def test_streaming_reads_the_same_splits_and_statistics_batch_by_batch(shapes, tmp_path, monkeypatch):
    in_memory = module(shapes, tmp_path / "memory", image_size=16, batch_size=32)
    in_memory.setup()
    streamed = module(shapes, tmp_path / "stream", image_size=16, batch_size=32, stream=True, num_workers=0)
    streamed.setup()
    assert streamed.splits == {} and {name: len(d) for name, d in streamed.streamed.items()} == {
        name: len(y) for name, (_, y) in in_memory.splits.items()
    }
    assert streamed.mean == pytest.approx(in_memory.mean) and streamed.std == pytest.approx(in_memory.std)
    batches = list(streamed.test_dataloader())
    assert torch.equal(torch.cat([x for x, _ in batches]), in_memory.splits["test"][0])
    assert torch.equal(torch.cat([y for _, y in batches]), in_memory.splits["test"][1])
    images, labels = next(iter(streamed.train_dataloader()))
    assert images.shape == (32, 3, 16, 16) and images.dtype == torch.uint8 and labels.shape == (32,)
    # Its cache holds the statistics only; a second run decodes nothing to set up.
    assert set(torch.load(streamed.cache.path, weights_only=True)) == {"settings", "mean", "std", "skipped"}
    monkeypatch.setattr("experiments.data.image_folder.read_images", never)
    again = module(shapes, tmp_path / "stream", image_size=16, stream=True)
    again.setup()
    assert again.mean == streamed.mean


def test_an_image_broken_beyond_its_header_stops_a_streamed_epoch_in_one_line(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # its header intact, half its pixels
    data = ImageFiles([good, truncated], [0, 1], [3, 8, 8])
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1)  # in a worker process, as in training
    with pytest.raises(UnreadableImage) as error:
        next(iter(loader))
    message = str(error.value)
    assert message.startswith(f"{truncated} is not a readable image (") and "\n" not in message


def error_line(tmp_path: Path, monkeypatch, capsys, *overrides: str) -> str:
    """The one line `python -m experiments` ends with for a bad image folder; no run directory is left behind."""
    return error_line_leaving_nothing(tmp_path, monkeypatch, capsys, "data=image_folder", "logger=none", *overrides)


def a_folder(tmp_path: Path, *classes: str) -> Path:
    """`tmp_path/photos` with a folder of one small image for each of `classes`."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in classes:
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / name / "a.png")
    return root


def with_an_empty_class(tmp_path: Path) -> Path:
    root = a_folder(tmp_path, "cat", "dog")
    (root / "emu").mkdir()
    return root


def with_a_broken_file(tmp_path: Path) -> Path:
    root = a_folder(tmp_path, "cat", "dog")
    (root / "dog" / "b.jpg").write_text("not an image")
    return root


BAD_FOLDERS = {  # how to make the folder, and the line that refuses it
    "root missing": (lambda tmp: tmp / "nowhere", "data.root={root}: no such folder"),
    "no class folders": (a_folder, "{root} holds no class folders: a classifier needs two or more"),
    "one class": (lambda tmp: a_folder(tmp, "cat"), "{root} holds one class folder (cat): a classifier needs two"),
    "train without test": (
        lambda tmp: a_folder(tmp, "train/cat", "train/dog"),
        "{root} has train/ but no test/: give it both, each with one folder per class, or put the class folders in",
    ),
    "a test class unknown in training": (
        lambda tmp: a_folder(tmp, "train/cat", "train/dog", "test/cat", "test/emu"),
        "{root}/test has class folders that {root}/train lacks: emu",
    ),
    "empty class": (with_an_empty_class, "class folders with no images in {root}: emu; add images or remove them"),
    "strict and a broken file": (with_a_broken_file, "{root}/dog/b.jpg is not a readable image ("),
}


# Two kinds in the fast tier (one found when the module is built, one when it reads the files); all in the full.
FAST_FOLDERS = ("root missing", "empty class")


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=() if c in FAST_FOLDERS else pytest.mark.slow) for c in BAD_FOLDERS]
)
def test_a_bad_folder_is_one_line_with_exit_code_2_and_leaves_nothing(tmp_path, monkeypatch, capsys, case):
    make, expected = BAD_FOLDERS[case]
    root = make(tmp_path)
    strict = ["data.strict=true"] if case.startswith("strict") else []
    line = error_line(tmp_path, monkeypatch, capsys, f"data.root={root}", *strict)
    assert line.startswith(expected.format(root=root)), line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.image_size=0", "data.image_size=0 is not allowed: it must be an integer from 1 to 4096, or [height,"),
        ("data.image_size=[8,8,8]", "data.image_size=[8, 8, 8] is not allowed"),
        ("data.channels=2", "data.channels=2 is not allowed: it must be 1 (grey) or 3 (RGB)"),
        pytest.param(
            "data.translate=8 data.image_size=8",
            "data.translate=8 is not allowed: it must be an integer >= 0 and <= 7",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "data.stream=maybe", "data.stream='maybe' is not allowed: it must be true or false", marks=pytest.mark.slow
        ),
        pytest.param(
            "data.test_size=0",
            "data.test_size=0 is not allowed: it must be a number > 0.0 and < 1.0",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_bad_settings_are_one_line(tmp_path, monkeypatch, capsys, override, expected):
    root = a_folder(tmp_path, "cat", "dog")
    assert error_line(tmp_path, monkeypatch, capsys, f"data.root={root}", *override.split()).startswith(expected)


def test_the_image_folder_config_composes_with_the_common_keys(tmp_path):
    import lightning as L

    from experiments.core.build import build

    root = a_folder(tmp_path, "cat", "dog")
    cfg = compose(["data=image_folder", f"data.root={root}", f"data.data_dir={tmp_path / 'data'}", "seed=3"])
    assert {"data_dir", "batch_size", "val_size", "split_seed", "seed"} <= set(cfg.data)
    assert "download" not in cfg.data  # nothing to download: its own files only
    data = build(cfg.data, "data", L.LightningDataModule)
    assert data.spec["shape"] == [3, 32, 32] and data.seed == 3 and data.class_names == ["cat", "dog"]


# Training and predictions: the run's own test images, as files, give its test accuracy exactly.


def predict_folder(run_dir: Path, folder: Path, out: Path) -> float:
    """`python -m experiments.predict RUN FOLDER`, in-process: the accuracy of its predictions on the folder's
    images, each labelled by its class folder."""
    from experiments.commands.predict import main

    main([str(run_dir), str(folder), "--out", str(out)])
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(image_files(folder))
    return sum(Path(row["input"]).parts[0] == row["predicted"] for row in rows) / len(rows)


def train_on_folder(root: Path, run_dir: Path, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose([f"paths.output_dir={run_dir}", "data=image_folder", f"data.root={root}", *overrides])
    train(cfg)
    (run_dir / ".hydra").mkdir()  # what Hydra writes beside every run, which predictions read
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("stream", [False, True])
def test_drawn_shapes_are_learnt_and_their_files_predicted_as_in_the_test(tmp_path, stream):
    root = tmp_path / "shapes"
    write_shapes(root / "train", 30)
    write_shapes(root / "test", 10, seed=1)
    metrics = train_on_folder(
        root,
        tmp_path / "run",
        f"paths.data_dir={tmp_path / 'data'}",
        "model=cnn",
        "model.channels=[8,16]",
        "data.image_size=16",
        "data.batch_size=16",
        f"data.stream={str(stream).lower()}",
        "data.num_workers=0",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "logger=none",
    )
    assert metrics["test"]["test/acc"] > 0.8  # three classes: chance is a third
    accuracy = predict_folder(tmp_path / "run", root / "test", tmp_path / "predictions.csv")
    assert accuracy == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)
    # The test split through the data module's own loader, streamed or not, gives the same.
    from experiments.commands.predict import main

    main([str(tmp_path / "run"), "--split", "test", "--out", str(tmp_path / "split.csv")])
    with open(tmp_path / "split.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sum(row["label"] == row["predicted"] for row in rows) / len(rows) == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("model", ["mlp", "rnn"])
def test_every_net_trains_on_a_streamed_folder(tmp_path, model):
    # Streamed data cannot give its whole training split at once: no net may ask for it unless it fits
    # itself to it (the text MLP's naive-Bayes weights); the image MLP once did.
    root = tmp_path / "shapes"
    write_shapes(root, 10)
    overrides = [f"paths.data_dir={tmp_path / 'data'}", f"model={model}", "data.image_size=8", "data.stream=true"]
    overrides += ["data.num_workers=0", "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=none"]
    metrics = train_on_folder(root, tmp_path / "run", *overrides)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1


@pytest.mark.slow
def test_real_cifar10_images_as_files_are_learnt_and_predicted_as_in_the_test(tmp_path):
    arrays = np.load(real("cifar10_test5k_jpeg_q75.npz"))
    images, labels, names = arrays["x"], arrays["y"], [str(name) for name in arrays["class_names"]]
    root = tmp_path / "cifar"
    for split, part in (("train", slice(0, 600)), ("test", slice(4000, 4200))):
        for i, (pixels, label) in enumerate(zip(images[part], labels[part], strict=True)):
            (root / split / names[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / names[label] / f"{i:04d}.png")
    metrics = train_on_folder(
        root,
        tmp_path / "run",
        f"paths.data_dir={tmp_path / 'data'}",
        "model=cnn",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "logger=none",
        "data.batch_size=32",
    )
    assert metrics["test"]["test/acc"] > 0.2  # ten classes: chance is a tenth
    accuracy = predict_folder(tmp_path / "run", root / "test", tmp_path / "predictions.csv")
    assert accuracy == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)


def test_a_folder_outside_the_working_directory_is_found_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_shapes(tmp_path / "photos", 2)
    data = ImageFolderDataModule(root="~/photos", data_dir=str(tmp_path / "data"))
    assert data.folder == tmp_path / "photos" and data.class_names == list(SHAPES)
