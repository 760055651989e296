"""A table's columns as the numbers a net reads, learnt from the training rows alone and kept as plain values.

- numeric columns are standardised by the training rows' mean and standard deviation;
- boolean columns become 0 or 1;
- categorical columns are one-hot encoded over the training rows' categories (the `max_categories` most
  frequent), plus one slot, "other", for a category the training rows did not have or did not keep;
- a missing value (`missing: indicator`) is filled with the training mean (0 once standardised) or, for a
  boolean, 0.5, and marked in an indicator column of its own where the training rows had missing values;
  a categorical column's missing value is a category of its own. `missing: error` refuses it with one line.

`TableEncoding.fit(frame, ...)` learns it; `state()` is plain values (saved in every checkpoint of the run, see
data/table.py), `TableEncoding(state)` rebuilds it, and `encode(frame)` gives float32 rows for any frame that has
the training columns: training, validation and test rows, and new rows for predictions, all read the same way.
"""

from __future__ import annotations

import math

import torch

from experiments.core.errors import UserError

TYPES = ("numeric", "categorical", "boolean")
MISSING = ("indicator", "error")
OTHER = "(other)"
MISSING_CATEGORY = "(missing)"
TRUE, FALSE = {"true", "yes", "1", "1.0"}, {"false", "no", "0", "0.0"}


def infer_type(column) -> str:
    """The type a column's values say: booleans, numbers, or anything else (text, categories) as categorical."""
    from pandas.api import types

    present = column.dropna()
    if types.is_bool_dtype(column) or (len(present) and present.map(lambda v: isinstance(v, bool)).all()):
        return "boolean"  # (with missing values, pandas holds booleans as objects)
    return "numeric" if types.is_numeric_dtype(column) else "categorical"


def as_booleans(column, name: str):
    """A column of true/false values (any case, yes/no, 1/0) as 1.0 and 0.0, missing values as NaN."""
    import pandas as pd

    def value(v):
        if pd.isna(v):
            return math.nan
        text = str(v).strip().lower()
        if text in TRUE:
            return 1.0
        if text in FALSE:
            return 0.0
        raise UserError(f"column {name!r} is boolean but holds {v!r}: give it data.column_types.{name}=categorical")

    return column.map(value).astype("float64")


class TableEncoding:
    def __init__(self, state: dict) -> None:
        self.columns: list[dict] = state["columns"]
        self.missing: str = state["missing"]

    @classmethod
    def fit(cls, frame, columns: list[str], types: dict[str, str], missing: str, max_categories: int):
        """Learn the encoding of `columns` from the training rows in `frame`; `types` overrides inferred types."""
        described = []
        for name in columns:
            column = frame[name]
            if column.isna().all():
                raise UserError(f"feature column {name!r} is entirely empty: leave it out (data.drop_columns=[{name}])")
            kind = types.get(name) or infer_type(column)
            has_missing = bool(column.isna().any())
            if has_missing and missing == "error":
                count = int(column.isna().sum())
                raise UserError(f"column {name!r} has {count} missing values; fill them, or set data.missing=indicator")
            entry = {"name": name, "type": kind, "indicator": has_missing and kind != "categorical"}
            if kind == "numeric":
                values = _numbers(column, name)
                std = float(values.std(ddof=0))
                entry.update(mean=float(values.mean()), std=std if std > 0 else 1.0)
            elif kind == "boolean":
                as_booleans(column, name)  # every value reads as a boolean
            else:
                counts = column.fillna(MISSING_CATEGORY).astype(str).value_counts(sort=False)
                kept = counts.sort_values(ascending=False, kind="stable").index[:max_categories]
                entry["categories"] = sorted(kept)
            described.append(entry)
        return cls({"columns": described, "missing": missing})

    def state(self) -> dict:
        return {"columns": self.columns, "missing": self.missing}

    @property
    def feature_names(self) -> list[str]:
        """The name of each number of an encoded row: `age`, `age (missing)`, `colour=red`, `colour=(other)`."""
        names = []
        for entry in self.columns:
            if entry["type"] == "categorical":
                names += [f"{entry['name']}={category}" for category in (*entry["categories"], OTHER)]
            else:
                names.append(entry["name"])
                if entry["indicator"]:
                    names.append(f"{entry['name']} (missing)")
        return names

    def encode(self, frame, source: str = "the table") -> torch.Tensor:
        """The rows of `frame` as float32 numbers, (rows, features); `source` names the frame in errors."""
        import numpy as np

        absent = [entry["name"] for entry in self.columns if entry["name"] not in frame.columns]
        if absent:
            raise UserError(f"{source} lacks the column(s) the model was trained on: {', '.join(absent)}")
        parts = []
        for entry in self.columns:
            name, column = entry["name"], frame[entry["name"]]
            missing = column.isna().to_numpy()
            if missing.any() and self.missing == "error":
                count = int(missing.sum())
                raise UserError(f"{source}: column {name!r} has {count} missing values (data.missing=error)")
            if entry["type"] == "categorical":
                slots = {category: i for i, category in enumerate(entry["categories"])}
                values = column.fillna(MISSING_CATEGORY).astype(str).map(slots).fillna(len(slots)).to_numpy(int)
                parts.append(np.eye(len(slots) + 1, dtype=np.float32)[values])
                continue
            if entry["type"] == "numeric":
                values = (_numbers(column, name, source).to_numpy(np.float64) - entry["mean"]) / entry["std"]
                fill = 0.0  # the mean, standardised
            else:
                values, fill = as_booleans(column, name).to_numpy(np.float64), 0.5
            parts.append(np.where(missing, fill, values)[:, None])
            if entry["indicator"]:
                parts.append(missing[:, None])
        return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))


def _numbers(column, name: str, source: str = "the table"):
    """A numeric column's values as floats; text in it is one line naming the column."""
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        example = column[bad].iloc[0]
        raise UserError(f"{source}: column {name!r} is numeric but holds {example!r}; fix it or make it categorical")
    return values.astype("float64")
