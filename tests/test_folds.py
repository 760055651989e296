"""k-fold cross-validation (`data.folds=K data.fold=I`): the folds partition each dataset's training part exactly,
stratified by class, the test split untouched; a sweep over the folds is summarised as one group, mean ± std."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter

import numpy as np
import pytest
import torch

from experiments.data import DigitsDataModule, ImageFolderDataModule, MNISTDataModule, TextCSVDataModule
from experiments.data.folds import fold_indices
from tests.conftest import run_cli
from tests.fixtures import write_mnist
from tests.test_image_folder import write_shapes
from tests.test_reliability_config import error_line_leaving_nothing


def test_the_folds_partition_the_examples_each_class_in_proportion():
    labels = torch.tensor([0] * 50 + [1] * 31 + [2] * 7)
    folds = [fold_indices(labels, 4, fold, seed=3) for fold in range(4)]
    validating = torch.cat([val for _, val in folds])
    assert sorted(validating.tolist()) == list(range(len(labels)))  # each example validates exactly once
    for train, val in folds:
        assert sorted(torch.cat([train, val]).tolist()) == list(range(len(labels)))
        counts = Counter(labels[val].tolist())
        for label, total in Counter(labels.tolist()).items():
            assert abs(counts[label] - total / 4) < 1  # the class's share, to within one example
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1
    assert torch.equal(fold_indices(labels, 4, 1, seed=3)[1], folds[1][1])  # the same for the same seed
    assert not torch.equal(fold_indices(labels, 4, 1, seed=4)[1], folds[1][1])


def rows(x: torch.Tensor) -> list[bytes]:
    """Each example as bytes, sorted: a split's contents whatever its order."""
    return sorted(bytes(row) for row in x.flatten(1).numpy())


def check_partition(build, rows=rows) -> None:
    """`build(folds=, fold=)` -> a set-up data module: its 3 folds' validation parts together are the training part
    of the module without folds (its training and validation parts), each once; its test split is that one's."""
    plain = build(folds=None, fold=0)
    whole = rows(torch.cat([plain.splits["train"][0], plain.splits["val"][0]]))
    test = rows(plain.splits["test"][0])
    validating = []
    for fold in range(3):
        data = build(folds=3, fold=fold)
        (x_train, _), (x_val, _), (x_test, y_test) = (data.splits[s] for s in ("train", "val", "test"))
        assert rows(torch.cat([x_train, x_val])) == whole
        assert rows(x_test) == test and torch.equal(y_test, plain.splits["test"][1])
        validating += rows(x_val)
    assert sorted(validating) == whole


def setup(data):
    data.prepare_data()
    data.setup("fit")
    return data


def test_image_folder_folds(tmp_path):
    write_shapes(tmp_path / "photos", 15)
    check_partition(
        lambda **folds: setup(
            ImageFolderDataModule(root=str(tmp_path / "photos"), data_dir=str(tmp_path / "data"), image_size=8, **folds)
        )
    )


def test_digits_folds():
    check_partition(lambda **folds: setup(DigitsDataModule(split_seed=0, **folds)))
    data = setup(DigitsDataModule(split_seed=0, folds=3, fold=2))
    assert rows(data.splits["test"][0]) == rows(setup(DigitsDataModule(split_seed=0)).splits["test"][0])


def test_downloaded_dataset_folds(tmp_path):
    write_mnist(tmp_path, n_train=300, n_test=50)
    check_partition(lambda **folds: setup(MNISTDataModule(data_dir=str(tmp_path), download=False, **folds)))


def test_text_csv_folds(tmp_path):
    """Each fold has a vocabulary of its own training part: the texts are compared as words. Every word of these
    texts is in every fold's vocabulary, so the words give each text back exactly."""
    rng = np.random.default_rng(0)
    path = tmp_path / "texts.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for i in range(120):
            label = ["good", "bad", "meh"][i % 3]
            digits = " ".join(f"d{digit}" for digit in f"{i:03d}")
            writer.writerow([f"{digits} {' '.join(rng.choice(['a', 'b', 'c'], 5))} {label}", label])

    def build(**folds):
        data = TextCSVDataModule(path=str(path), data_dir=str(tmp_path / "data"), seq_len=16, min_freq=1, **folds)
        texts.vocabulary = setup(data).vocabulary
        return data

    def texts(x: torch.Tensor) -> list[str]:
        return sorted(" ".join(texts.vocabulary[i] for i in row if i != 0) for row in x.tolist())

    check_partition(build, texts)
    counts = Counter(build(folds=3, fold=1).splits["val"][1].tolist())
    assert all(10 <= n <= 11 for n in counts.values()) and len(counts) == 3  # 96 training rows, 32 of each class


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.folds=3", "data.fold=3"], "data.fold=3 is not allowed: it must be an integer >= 0 and <= 2"),
        (["data.folds=1"], "data.folds=1 is not allowed: it must be an integer >= 2 (k-fold cross-validation)"),
        (["data.folds=5", "data.fold=-1"], "data.fold=-1 is not allowed"),
        (["data.fold=2"], "data.fold=2 needs data.folds, the number of folds: e.g. data.folds=5"),
    ],
)
def test_impossible_folds_are_one_line(overrides, message, tmp_path, monkeypatch, capsys):
    assert message in error_line_leaving_nothing(tmp_path, monkeypatch, capsys, "model=mlp", *overrides)


@pytest.mark.slow
def test_a_sweep_over_the_folds_is_summarised_as_their_mean_and_std(tmp_path):
    result = run_cli(
        "-m",
        "model=mlp",
        "data.folds=3",
        "data.fold=0,1,2",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.dashboards=null",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    accuracies = [json.loads((sweep / str(job) / "metrics.json").read_text())["test"]["test/acc"] for job in range(3)]
    markdown = (sweep / "summary.md").read_text()
    over_folds = markdown.split("Over folds: 1 group of jobs that differ only in `data.fold`")[1]
    (row,) = [line for line in over_folds.splitlines() if line.startswith("| (all) |")]
    assert f"| {statistics.fmean(accuracies):.4f} ± {statistics.stdev(accuracies):.4f} |" in row
    assert row.startswith("| (all) | 3 |") and row.endswith("| 0 1 2 |")
    with open(sweep / "summary.csv", newline="") as file:
        assert {r["group_n"] for r in csv.DictReader(file)} == {"3"}
    assert (sweep / "summary.png").stat().st_size > 0
