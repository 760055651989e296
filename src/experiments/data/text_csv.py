"""One's own labelled texts: a CSV file with a header, or a JSON-lines file (`.jsonl`), one example a row.

Labels of any type (strings, integers, booleans) become class ids in the sorted order of their text, which
names the classes. The test split is the file `test_path` when given, else `test_size` of `path` carved off
with `split_seed`; the validation part is carved from what is left, as for every dataset. The texts are
tokenised and encoded as IMDB's are (text.py), with a vocabulary from the training part only, and cached in
`data_dir/text_csv_cache/` under a name made from the files' contents and every setting that shapes them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.core.errors import UserError, first_line
from experiments.data.encoded_text import EncodedTextDataModule
from experiments.data.folds import carve, validation_rows
from experiments.data.in_memory import check_held_out
from experiments.data.text import encode_splits

CACHE_FORMAT = 1  # bump when reading, tokenisation or encoding changes, so old caches are not reused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    """The rows of one file that have a text: each text and its label, as text; the file's sha1 names its cache."""

    texts: list[str]
    labels: list[str]
    sha1: str


def csv_rows(text: str) -> tuple[list[dict], list[str]]:
    """The rows of a CSV table with a header, as dicts, and its column names; ValueError naming the line if not."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as error:
        raise ValueError(f"line {reader.line_num}: {error}") from error
    return rows, list(reader.fieldnames or [])


def json_lines(text: str) -> tuple[list[dict], list[str]]:
    """The JSON object of each line, and the keys any of them has; ValueError naming the line if not."""
    rows = []
    for line_number, line in enumerate(text.split("\n"), 1):  # "\n" only: JSON strings may hold U+2028 unescaped
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"line {line_number}: {error.msg}") from error
        if not isinstance(row, dict):
            raise ValueError(f"line {line_number} is not a JSON object")
        rows.append(row)
    return rows, list(dict.fromkeys(key for row in rows for key in row))


def read_rows(path: Path) -> tuple[list[dict], list[str], str]:
    """The rows of a CSV file (by its header) or of a JSON-lines file, the column names, and the file's sha1."""
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a .csv or .jsonl file")
    data = path.read_bytes()
    kind = "JSONL" if path.suffix.lower() == ".jsonl" else "CSV"
    try:
        text = data.decode("utf-8-sig")  # the byte-order mark spreadsheet programs write is no part of the header
        rows, columns = csv_rows(text) if kind == "CSV" else json_lines(text)
    except ValueError as error:  # UnicodeDecodeError is one
        raise UserError(f"{path} is not a readable {kind} file ({first_line(str(error))})") from error
    if not rows:
        raise UserError(f"{path} holds no rows")
    return rows, columns, hashlib.sha1(data).hexdigest()


def read_table(path: Path, text_column: str, label_column: str) -> Table:
    """The texts and labels of a file; rows with an empty text are skipped, and counted in one warning."""
    rows, columns, sha1 = read_rows(path)
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise UserError(f"{path} has no column {column!r} (it has {', '.join(columns)}); set data.{key}")
    texts, labels = [], []
    for row_number, row in enumerate(rows, 1):
        label, text = row.get(label_column), row.get(text_column)
        if label is None or not str(label).strip():
            raise UserError(f"{path}: row {row_number} has no {label_column!r}; every row needs a label")
        if text is None or not str(text).strip():
            continue
        texts.append(str(text))
        labels.append(str(label))  # a class per text form: 1 and "1" are one class, True is "True"
    if not texts:
        raise UserError(f"{path}: every text in column {text_column!r} is empty")
    if len(texts) < len(rows):
        log.warning("skipped %d row(s) of %s with an empty text", len(rows) - len(texts), path)
    return Table(texts, labels, sha1)


class TextCSVDataModule(EncodedTextDataModule):
    """The rows of `path` (minus a test part unless `test_path` is given, and a validation part) and the test rows.

    The files are read when the module is built, as the number of classes is part of the spec the net is built
    from; the encoded splits are what `fetch` leaves in the cache and `load` reads.
    """

    cache_folder = "text_csv_cache"

    def __init__(
        self,
        *,
        path: str,
        test_path: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        test_size: float = 0.2,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        vocab_size: int = 20000,
        min_freq: int = 2,
        seq_len: int = 400,
    ) -> None:
        # Nothing to download: `fetch` encodes the user's own files into the cache, and a cache that cannot be
        # read is built again (cache.py), so nothing is ever fetched afresh either.
        super().__init__(
            data_dir=data_dir,
            download=False,
            batch_size=batch_size,
            val_size=val_size,
            split_seed=split_seed,
            seed=seed,
            folds=folds,
            fold=fold,
            vocab_size=vocab_size,
            min_freq=min_freq,
            seq_len=seq_len,
        )
        if test_path is None:
            check_held_out(val_size, test_size)
        self.path = Path(path).expanduser()
        self.table = read_table(self.path, text_column, label_column)
        self.test_table = None
        if test_path is not None:
            self.test_table = read_table(Path(test_path).expanduser(), text_column, label_column)
        self.class_names = sorted(set(self.table.labels))
        if len(self.class_names) < 2:
            raise UserError(f"{self.path}: every row has the label {self.class_names[0]!r}; a classifier needs two")
        if self.test_table is not None and (unknown := sorted(set(self.test_table.labels) - set(self.class_names))):
            raise UserError(f"{test_path} has labels that {self.path} lacks: {', '.join(unknown)}")
        # Every setting of its own that shapes the encoding, and so names its cache file (the encoding's own come
        # from EncodedTextDataModule): the files by their contents.
        settings = {
            "format": CACHE_FORMAT,
            "files": [self.table.sha1, self.test_table.sha1 if self.test_table else None],
            "columns": [text_column, label_column],
            "test_size": None if self.test_table else test_size,
            "val_size": self.val_size,
            "split_seed": self.split_seed,
        }
        if self.folds is not None:  # only then: caches made before folds keep their names
            settings |= {"folds": self.folds, "fold": self.fold}
        self.encoded_by(settings, len(self.class_names))

    def _encode(self) -> dict:
        """The vocabulary and the three splits as token ids; the vocabulary from the training part alone."""
        class_id = {name: i for i, name in enumerate(self.class_names)}
        table, rows, parts = self.table, torch.arange(len(self.table.texts)), {}
        if self.test_table is None:  # the test part first, then the validation part from what is left
            rest, parts["test"] = carve(len(rows), self.settings["test_size"], self.split_seed)
            rows = rows[rest]
        rest_labels = [class_id[table.labels[i]] for i in rows.tolist()]
        train, val = validation_rows(rest_labels, self.val_size, self.split_seed, self.folds, self.fold)
        parts = {"train": rows[train], "val": rows[val], **parts}
        texts = {name: [table.texts[i] for i in part.tolist()] for name, part in parts.items()}
        labels = {name: [class_id[table.labels[i]] for i in part.tolist()] for name, part in parts.items()}
        if self.test_table is not None:
            texts["test"] = self.test_table.texts
            labels["test"] = [class_id[label] for label in self.test_table.labels]
        settings = self.settings
        return encode_splits(texts, labels, settings["vocab_size"], settings["min_freq"], settings["seq_len"])
