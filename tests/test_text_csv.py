"""`data=text_csv`: labelled texts from a CSV or JSON-lines file, tokenised and encoded as IMDB's, cached by the
files' contents and the settings; trained on, and predicted from a CSV of new texts. Drawn reviews always; the
real IMDB reviews written as a CSV file where the shared data is present."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.core.config import compose
from experiments.core.errors import UserError
from experiments.data import TextCSVDataModule
from experiments.run.task import train
from tests.fixtures import NEGATIVE, POSITIVE, review
from tests.test_datasets import real
from tests.test_reliability_config import error_line_leaving_nothing


def reviews(n: int, seed: int = 0) -> list[tuple[str, bool]]:
    """`n` drawn reviews (text, positive), alternately positive and negative."""
    rng = np.random.default_rng(seed)
    return [(review(rng, i % 2 == 0), i % 2 == 0) for i in range(n)]


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def sentiment_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    """Reviews labelled "good" or "bad", in columns `review` and `verdict` beside an id."""
    rows = [
        {"id": i, "review": text, "verdict": "good" if positive else "bad"}
        for i, (text, positive) in enumerate(reviews(n, seed))
    ]
    return write_csv(path, rows)


def module(path: Path, data_dir: Path, **settings) -> TextCSVDataModule:
    columns = {"text_column": "review", "label_column": "verdict"}
    return TextCSVDataModule(path=str(path), data_dir=str(data_dir), **(columns | settings))


def test_labels_name_the_classes_in_sorted_order_and_the_spec_is_ready_at_once(tmp_path):
    data = module(sentiment_csv(tmp_path / "reviews.csv"), tmp_path / "data", seq_len=40, vocab_size=100)
    assert data.class_names == ["bad", "good"]
    assert data.spec == {"kind": "text", "vocab_size": 100, "pad_index": 0, "seq_len": 40, "num_classes": 2}
    assert not (tmp_path / "data").exists()  # nothing encoded yet


def test_a_csv_is_split_encoded_with_a_training_vocabulary_and_cached(tmp_path, monkeypatch):
    path = sentiment_csv(tmp_path / "reviews.csv")
    data = module(path, tmp_path / "data", seq_len=40, vocab_size=100, test_size=0.25, val_size=0.2)
    data.setup()
    assert [len(data.splits[name][1]) for name in ("train", "val", "test")] == [120, 30, 50]
    x, y = data.splits["train"]
    assert x.shape == (120, 40) and x.dtype == torch.int32 and set(y.tolist()) == {0, 1}
    assert data.vocabulary[:2] == ["<pad>", "<unk>"] and "great" in data.vocabulary
    assert data.cache.path.parent == tmp_path / "data" / "text_csv_cache" and data.cache.path.is_file()
    # The words of a positive review are those of class 1, "good".
    first_good = next(i for i, label in enumerate(y.tolist()) if label == 1)
    words = {data.vocabulary[t] for t in x[first_good].tolist()}
    assert words & set(POSITIVE) and not words & set(NEGATIVE)

    with monkeypatch.context() as patch:  # a second run reads the cache and tokenises nothing
        patch.setattr("experiments.data.text.tokenize", lambda text: pytest.fail("tokenised again"))
        again = module(path, tmp_path / "data", seq_len=40, vocab_size=100, test_size=0.25, val_size=0.2)
        again.setup()
    assert torch.equal(again.splits["test"][0], data.splits["test"][0]) and again.vocabulary == data.vocabulary
    # Another setting, or another file's contents: another cache.
    assert module(path, tmp_path / "data", seq_len=41, test_size=0.25, val_size=0.2).cache.path != data.cache.path
    sentiment_csv(path, seed=1)
    assert module(path, tmp_path / "data", seq_len=40, vocab_size=100, test_size=0.25, val_size=0.2).cache.path != (
        data.cache.path
    )


def test_a_test_file_is_the_test_split_and_adds_nothing_to_the_vocabulary(tmp_path):
    marker = "zzzonlyintest"
    test_rows = [{"review": f"{marker} {text}", "verdict": "good" if p else "bad"} for text, p in reviews(30, 2)]
    test_path = write_csv(tmp_path / "test.csv", test_rows)
    data = module(sentiment_csv(tmp_path / "train.csv"), tmp_path / "data", test_path=str(test_path), min_freq=1)
    data.setup()
    assert [len(data.splits[name][1]) for name in ("train", "val", "test")] == [180, 20, 30]
    assert marker not in data.vocabulary and (data.splits["test"][0][:, 0] == 1).all()  # <unk> there
    assert data.splits["test"][1].tolist() == [1, 0] * 15  # in the file's order


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        ([3, 1, 2], ["1", "2", "3"]),
        ([True, False, False], ["False", "True"]),
        (["pos", "neg", "neutral"], ["neg", "neutral", "pos"]),
    ],
    ids=["integers", "booleans", "strings"],
)
def test_json_lines_with_labels_of_any_type(tmp_path, labels, names):
    rows = [{"text": text, "label": labels[i % len(labels)]} for i, (text, _) in enumerate(reviews(60))]
    data = TextCSVDataModule(path=str(write_jsonl(tmp_path / "reviews.jsonl", rows)), data_dir=str(tmp_path / "d"))
    assert data.class_names == names
    data.setup()
    ids = torch.cat([data.splits[name][1] for name in ("train", "val", "test")])
    assert sorted(ids.tolist()) == sorted(names.index(str(labels[i % len(labels)])) for i in range(60))


def test_empty_texts_are_skipped_with_one_warning(tmp_path, caplog):
    rows = [{"text": text if i % 10 else "  ", "label": i % 2} for i, (text, _) in enumerate(reviews(50))]
    with caplog.at_level(logging.WARNING):
        data = TextCSVDataModule(path=str(write_csv(tmp_path / "r.csv", rows)), data_dir=str(tmp_path / "d"))
    assert len(data.table.texts) == 45 and "skipped 5 row(s)" in caplog.text and "with an empty text" in caplog.text


def test_a_byte_order_mark_is_no_part_of_the_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext,label\ngood film,1\nbad film,0\n".encode())
    assert TextCSVDataModule(path=str(path), data_dir=str(tmp_path / "d")).class_names == ["0", "1"]


def test_new_texts_are_encoded_with_the_runs_vocabulary(tmp_path):
    path = sentiment_csv(tmp_path / "reviews.csv")
    data = module(path, tmp_path / "data", seq_len=8)
    encoded = data.encode_inputs(["great film", "a word never seen"])
    assert encoded.shape == (2, 8) and encoded[1, 1:4].tolist() == [1, 1, 1]  # "word never seen": <unk>
    assert data.vocabulary[encoded[0, 0]] == "great"


# Bad input: one line, exit code 2, nothing left behind.


def error_line(tmp_path: Path, monkeypatch, capsys, *overrides: str) -> str:
    return error_line_leaving_nothing(tmp_path, monkeypatch, capsys, "data=text_csv", "logger=none", *overrides)


def binary(tmp: Path) -> Path:
    (tmp / "r.csv").write_bytes(bytes(range(256)))
    return tmp / "r.csv"


def broken_json(tmp: Path) -> Path:
    (tmp / "r.jsonl").write_text('{"text": "fine", "label": 1}\n{"text": "cut off\n')
    return tmp / "r.jsonl"


def one_label(tmp: Path) -> Path:
    return write_csv(tmp / "r.csv", [{"text": text, "label": "pos"} for text, _ in reviews(5)])


def all_empty(tmp: Path) -> Path:
    return write_csv(tmp / "r.csv", [{"text": "", "label": i % 2} for i in range(5)])


def missing_label(tmp: Path) -> Path:
    return write_csv(
        tmp / "r.csv", [{"text": text, "label": "" if i == 2 else i % 2} for i, (text, _) in enumerate(reviews(4))]
    )


BAD_FILES = {  # how to make the file, extra overrides, and the line that refuses it
    "missing": (lambda tmp: tmp / "nowhere.csv", [], "{path}: no such file"),
    "not text": (binary, [], "{path} is not a readable CSV file ("),
    "not json": (broken_json, [], "{path} is not a readable JSONL file (line 2: Unterminated string"),
    "no such column": (
        lambda tmp: sentiment_csv(tmp / "r.csv", 10),
        ["data.text_column=body"],
        "{path} has no column 'body' (it has id, review, verdict); set data.text_column",
    ),
    "one label": (one_label, [], "{path}: every row has the label 'pos'; a classifier needs two"),
    "all texts empty": (all_empty, [], "{path}: every text in column 'text' is empty"),
    "a row without label": (missing_label, [], "{path}: row 3 has no 'label'; every row needs a label"),
}


# Two kinds in the fast tier; all of them in the full one.
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=() if c in ("missing", "no such column") else pytest.mark.slow) for c in BAD_FILES]
)
def test_a_bad_file_is_one_line_with_exit_code_2_and_leaves_nothing(tmp_path, monkeypatch, capsys, case):
    make, overrides, expected = BAD_FILES[case]
    path = make(tmp_path)
    line = error_line(tmp_path, monkeypatch, capsys, f"data.path={path}", *overrides)
    assert line.startswith(expected.format(path=path)), line


def test_a_test_file_with_an_unknown_label_is_one_line(tmp_path):
    train_path = write_csv(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    test_path = write_csv(tmp_path / "test.csv", [{"text": "c", "label": "z"}])
    with pytest.raises(UserError, match=rf"^{test_path} has labels that {train_path} lacks: z$"):
        TextCSVDataModule(path=str(train_path), test_path=str(test_path))


def test_the_text_csv_config_composes_with_the_common_keys(tmp_path):
    import lightning as L

    from experiments.core.build import build

    path = sentiment_csv(tmp_path / "reviews.csv", 10)
    cfg = compose(["data=text_csv", f"data.path={path}", "data.text_column=review", "data.label_column=verdict"])
    assert {"data_dir", "batch_size", "val_size", "split_seed", "seed"} <= set(cfg.data)
    assert "download" not in cfg.data  # nothing to download: its own files only
    data = build(cfg.data, "data", L.LightningDataModule)
    assert data.spec["seq_len"] == 400 and data.seed == cfg.seed and data.class_names == ["bad", "good"]


# Training, the naive-Bayes recipe's fit to the training split, and predictions on a CSV of new texts.


def test_drawn_reviews_are_learnt_and_new_texts_predicted(tmp_path, capsys):
    from omegaconf import OmegaConf

    from experiments.commands.predict import main

    path = sentiment_csv(tmp_path / "reviews.csv", n=300)
    run_dir = tmp_path / "run"
    cfg = compose(
        [
            f"paths.output_dir={run_dir}",
            f"paths.data_dir={tmp_path / 'data'}",
            "data=text_csv",
            f"data.path={path}",
            "data.text_column=review",
            "data.label_column=verdict",
            "data.seq_len=40",
            "data.vocab_size=100",
            "data.batch_size=16",
            "model=mlp",
            "model.naive_bayes=true",  # fits itself to the whole training split first (training_tensors)
            "model.embedding_dim=1",
            "model.depth=0",
            "optimizer.lr=0.01",
            "trainer.max_epochs=4",
            "trainer.accelerator=cpu",
            "logger=none",
        ]
    )
    train(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] > 0.9  # two classes: chance is a half
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))

    new = write_csv(tmp_path / "new.csv", [{"review": " ".join(words * 2)} for words in (POSITIVE, NEGATIVE)])
    out = tmp_path / "predictions.csv"
    main([str(run_dir), str(new), "--out", str(out)])  # the run's text_column, `review`, is the default
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["input", "predicted", "probability", "p_bad", "p_good"]
    assert [row["predicted"] for row in rows] == ["good", "bad"]
    assert f"in {out}" in capsys.readouterr().out


@pytest.mark.slow
def test_real_imdb_reviews_from_a_csv_are_learnt(tmp_path):
    subprocess.run(["tar", "-xJf", real("aclImdb_labelled.tar.xz"), "-C", tmp_path], check=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 2000), ("test", 1000)):
        files = sorted((tmp_path / "aclImdb" / split).glob("*/*.txt"))
        chosen = [files[i] for i in sorted(rng.choice(len(files), count, replace=False))]
        rows = [{"text": f.read_text(encoding="utf-8"), "sentiment": f.parent.name} for f in chosen]
        write_csv(tmp_path / f"{split}.csv", rows)
    cfg = compose(
        [
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "data=text_csv",
            f"data.path={tmp_path / 'train.csv'}",
            f"data.test_path={tmp_path / 'test.csv'}",
            "data.label_column=sentiment",
            "data.seq_len=200",
            "data.vocab_size=5000",
            "model=mlp",
            "trainer.max_epochs=4",
            "trainer.accelerator=cpu",
            "logger=none",
        ]
    )
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] > 0.7  # two classes, half each: chance is a half
