"""Tables: rows of numeric, categorical and boolean columns, and a label column that is a class or a number.

    python -m experiments data=table_csv data.path=~/houses.csv data.label_column=price data.task=regression
    python -m experiments data=breast_cancer          # scikit-learn's bundled tables, offline
    python -m experiments data=diabetes               # (a regression)

`data.task` says what the label is: `classification` (any values; the classes are their sorted distinct values)
or `regression` (numbers; the model learns them standardised and reports them in their own unit). The test part
is `test_path` when given, else `test_size` of the rows; validation is `val_size` of the rest, both carved with
`split_seed` (by class for a classification). Every statistic of the encoding (table_encoding.py) comes from the
training part alone and is saved in each checkpoint (`state_dict`), so predictions read new rows exactly as the
training rows were read, with or without the training file at hand. The encoded splits are cached under
`data_dir/table_cache/`, named by the file's contents and every setting that shapes them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from experiments.core.errors import UserError, first_line
from experiments.core.rules import integer, one_of, require
from experiments.data.cache import SettingsCache
from experiments.data.folds import fold_indices
from experiments.data.in_memory import InMemoryDataModule, check_held_out
from experiments.data.table_encoding import MISSING, TYPES, TableEncoding

TASKS = ("classification", "regression")
CACHE_FORMAT = 1  # bump when reading or encoding changes, so old caches are not reused
READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}


def read_frame(path: Path):
    """A CSV or Parquet file as a pandas DataFrame; anything else, or a file that does not parse, is one line."""
    import pandas as pd

    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"{path} is not a CSV or Parquet file (.csv, .parquet): give one of those")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return getattr(pd, reader)(path)
    except ImportError as error:  # Parquet needs pyarrow (or fastparquet), which pandas leaves optional
        raise UserError(f"reading {path.name} needs pyarrow: pip install 'experiments[tables]'") from error
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise UserError(f"{path} cannot be read as {path.suffix[1:]}: {first_line(error)}") from error


class TableDataModule(InMemoryDataModule):
    """Base of the table data modules: a subclass gives `frames()` (the rows, and the test rows if apart), a
    `source` naming them, and a `fingerprint` of their contents; this module does the rest.

    The spec (features once encoded, the classes or the labels' scale) is known only once the table was read,
    so it is read at the first look at `spec`, not when the module is built: a run loaded back for predictions
    (run/finished.py) takes the encoding from its checkpoint and never needs the training file.
    """

    def __init__(
        self,
        *,
        label_column: str,
        task: str = "classification",
        feature_columns: list[str] | None = None,
        drop_columns: list[str] | None = None,
        column_types: dict[str, str] | None = None,
        missing: str = "indicator",
        max_categories: int = 50,
        test_size: float = 0.2,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size, val_size=val_size, split_seed=split_seed, seed=seed, folds=folds, fold=fold
        )
        column_types = dict(column_types or {})
        require(
            "data",
            task=(task, one_of(*TASKS)),
            missing=(missing, one_of(*MISSING)),
            max_categories=(max_categories, integer(1)),
            **{f"column_types.{name}": (kind, one_of(*TYPES)) for name, kind in column_types.items()},
        )
        check_held_out(val_size, test_size)
        self.label_column, self.task = label_column, task
        self.feature_columns, self.drop_columns = feature_columns, list(drop_columns or [])
        self.column_types, self.missing, self.max_categories = column_types, missing, max_categories
        self.test_size, self.data_dir = test_size, Path(data_dir).expanduser()
        self.encoding: TableEncoding | None = None
        self.target: dict = {}  # the classes' names, or the labels' mean and standard deviation
        self._spec: dict | None = None

    # What a subclass gives.
    source = "the table"

    def frames(self):
        """(the rows, the test rows or None)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """What names the rows' contents in the cache's name."""
        raise NotImplementedError

    # The spec, the splits, the encoding.
    @property
    def spec(self) -> dict:
        if self._spec is None:
            self.setup("fit")
        return self._spec

    def setup(self, stage: str | None = None) -> None:
        if "train" in self.splits or (stage == "predict" and self.encoding is not None):
            return  # read already; or new rows to predict with the encoding a checkpoint gave: nothing to read
        settings = {
            "format": CACHE_FORMAT,
            "rows": self.fingerprint(),
            **{key: getattr(self, key) for key in ("label_column", "task", "feature_columns", "drop_columns")},
            **{key: getattr(self, key) for key in ("column_types", "missing", "max_categories", "test_size")},
            "val_size": self.val_size,
            "split_seed": self.split_seed,
            "folds": [self.folds, self.fold],
        }
        cache = SettingsCache(self.data_dir / "table_cache", type(self).__name__.lower(), settings)
        stored = cache.read() if cache.path.is_file() else None
        stored = stored or cache.write(self._encode())
        self.splits.update(stored["splits"])  # beside the rows to predict, if any
        self._learnt(stored["encoding"], stored["target"], features=stored["splits"]["train"][0].shape[1])

    def _learnt(self, encoding: dict, target: dict, features: int) -> None:
        self.encoding, self.target = TableEncoding(encoding), target
        spec = {"kind": "table", "features": features, "task": self.task}
        if self.task == "classification":
            self.class_names = target["class_names"]
            spec["num_classes"] = len(self.class_names)
        else:
            spec.update(target_mean=target["mean"], target_std=target["std"])
        self._spec = spec

    def _encode(self) -> dict:
        """The splits as tensors, with the encoding and the target learnt from the training part."""
        frame, test = self.frames()
        features = self._feature_columns(frame)
        labels = self._labels(frame)
        if test is None:
            frame, test = self._split(frame, labels, self.test_size)
        if self.folds is None:
            train, val = self._split(frame, self._labels(frame), self.val_size)
        else:  # k-fold: the rows left after the test part, partitioned (by class for a classification)
            rest = self._labels(frame)
            strata = rest.astype(str).to_numpy() if self.task == "classification" else np.zeros(len(rest), int)
            train_rows, val_rows = fold_indices(strata, self.folds, self.fold, self.split_seed)
            train, val = frame.iloc[train_rows.numpy()], frame.iloc[val_rows.numpy()]
        encoding = TableEncoding.fit(train, features, self.column_types, self.missing, self.max_categories)
        target = self._target(self._labels(train))
        splits = {}
        for name, rows in {"train": train, "val": val, "test": test}.items():
            splits[name] = (encoding.encode(rows, self.source), self._label_tensor(self._labels(rows), target, name))
        return {"splits": splits, "encoding": encoding.state(), "target": target}

    def _split(self, frame, labels, fraction: float):
        """(rest, carved): `fraction` of the rows carved off with `split_seed`, in each class's proportion where
        every class has rows enough to share."""
        from sklearn.model_selection import train_test_split

        seed = self.split_seed
        if self.task == "classification":
            try:
                return train_test_split(frame, test_size=fraction, random_state=seed, stratify=labels)
            except ValueError:  # a class with a single row cannot be in both parts
                pass
        return train_test_split(frame, test_size=fraction, random_state=seed)

    def _feature_columns(self, frame) -> list[str]:
        columns = [str(c) for c in frame.columns]
        if self.label_column not in columns:
            raise UserError(f"{self.source} has no label column {self.label_column!r} (it has {', '.join(columns)})")
        chosen = self.feature_columns or [c for c in columns if c != self.label_column]
        unknown = [c for c in [*chosen, *self.drop_columns, *self.column_types] if c not in columns]
        if unknown:
            raise UserError(f"{self.source} has no column {unknown[0]!r} (it has {', '.join(columns)})")
        chosen = [c for c in chosen if c not in self.drop_columns and c != self.label_column]
        if not chosen:
            raise UserError(f"{self.source}: no feature column is left besides the label {self.label_column!r}")
        return chosen

    def _labels(self, frame):
        from pandas.api import types

        labels = frame[self.label_column]
        if labels.isna().any():
            count = int(labels.isna().sum())
            raise UserError(f"{self.source}: {count} rows have no {self.label_column!r}; fill them or leave them out")
        if self.task == "regression" and (types.is_bool_dtype(labels) or not types.is_numeric_dtype(labels)):
            raise UserError(
                f"data.task=regression needs numbers, but {self.label_column!r} holds {labels.iloc[0]!r}: "
                "use data.task=classification, or a numeric label column"
            )
        return labels

    def _target(self, labels) -> dict:
        """From the training labels: the classes' names in their sorted order, or the numbers' mean and std."""
        try:
            distinct = sorted(labels.unique())  # numbers by value, text by text
        except TypeError:  # a column of mixed types (numbers and text): all as text
            distinct = sorted(labels.unique(), key=str)
        if len(distinct) < 2:
            raise UserError(f"every training row's {self.label_column!r} is {distinct[0]!r}: there is nothing to learn")
        if self.task == "regression":
            values = labels.astype("float64")
            return {"mean": float(values.mean()), "std": float(values.std(ddof=0))}
        return {"class_names": [_name(value) for value in distinct]}

    def _label_tensor(self, labels, target: dict, split: str) -> torch.Tensor:
        if self.task == "regression":
            return torch.tensor(labels.astype("float64").to_numpy(), dtype=torch.float32)
        ids = {name: i for i, name in enumerate(target["class_names"])}
        names = [_name(value) for value in labels]
        unknown = sorted({name for name in names if name not in ids})
        if unknown:
            raise UserError(f"the {split} rows have labels the training rows lack: {', '.join(unknown[:5])}")
        return torch.tensor([ids[name] for name in names], dtype=torch.long)

    # What a run keeps of its data (every checkpoint), and how new rows are read for predictions.
    def state_dict(self) -> dict:
        if self.encoding is None:
            return {}
        return {"encoding": self.encoding.state(), "target": self.target, "features": self._spec["features"]}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._learnt(state["encoding"], state["target"], state["features"])

    def preprocessing(self) -> nn.Module:
        """Nothing between the encoded rows and the net: an export takes rows encoded as encoding.json says."""
        return nn.Identity()

    def encode_inputs(self, items: list) -> torch.Tensor:
        """Rows of CSV or Parquet files, encoded as the training rows were (the label column, if there, unused)."""
        if self.encoding is None:
            self.setup("predict")
        frames = [(read_frame(Path(item).expanduser()), item) for item in items]
        return torch.cat([self.encoding.encode(frame, str(item)) for frame, item in frames])


def _name(value) -> str:
    """A class's name: its value as text, a whole float without its `.0` (a column of ints with a gap is float)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class TableCSVDataModule(TableDataModule):
    """One's own table: `path` (CSV or Parquet) and, optionally, `test_path` with the same columns."""

    def __init__(self, *, path: str, test_path: str | None = None, **settings) -> None:
        super().__init__(**settings)
        self.path = Path(path).expanduser()
        self.test_path = Path(test_path).expanduser() if test_path else None
        self.source = str(self.path)

    def frames(self):
        test = read_frame(self.test_path) if self.test_path else None
        return read_frame(self.path), test

    def fingerprint(self) -> str:
        paths = [self.path, *([self.test_path] if self.test_path else [])]
        for path in paths:
            if not path.is_file():
                raise UserError(f"{path}: no such file")
        return "-".join(hashlib.sha1(path.read_bytes()).hexdigest() for path in paths)


BUNDLED = {  # scikit-learn's loader, its label column, and the task
    "breast_cancer": ("load_breast_cancer", "diagnosis", "classification"),
    "diabetes": ("load_diabetes", "progression", "regression"),
}


class BundledTableDataModule(TableDataModule):
    """One of scikit-learn's bundled tables, offline: `breast_cancer` (569 tumours, 30 measurements, malignant or
    benign) or `diabetes` (442 patients, 10 measurements, the disease's progression a year later, a number)."""

    def __init__(self, *, name: str, task: str, **settings) -> None:
        require("data", name=(name, one_of(*BUNDLED)))
        loader, label, its_task = BUNDLED[name]
        if task != its_task:
            raise UserError(f"data={name} is a {its_task} (its label: {label}); leave data.task={its_task}")
        super().__init__(label_column=label, task=task, **settings)
        self.name, self.loader, self.source = name, loader, f"data={name}"

    def frames(self):
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, self.loader)(as_frame=True)
        frame = bunch.frame.rename(columns={"target": self.label_column})
        if "target_names" in bunch:  # the classes by name: malignant, benign
            frame[self.label_column] = [str(bunch.target_names[i]) for i in bunch.target]
        return frame, None

    def fingerprint(self) -> str:
        import sklearn

        return f"{self.name}-scikit-learn-{sklearn.__version__}"
