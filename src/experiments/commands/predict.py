"""Predict the classes or numbers of new inputs with a trained run, into a CSV file.

    experiments predict outputs/train/runs/<run> ~/new_photos/            # a folder of images
    experiments predict <run> a.png b.jpg --out predictions.csv             # image files
    experiments predict <run> reviews.csv --text-column review              # texts: .csv or .jsonl
    experiments predict <run> new_rows.csv                                  # a table's rows: .csv or .parquet
    experiments predict <run>/checkpoints/last.ckpt --split test            # a split of the run's data
    experiments predict <run> photos/ data.data_dir=/elsewhere/data         # overrides, as for evaluate

New inputs go through exactly what the run's own inputs went through: images are decoded, converted to the
run's channels and resized to its image size as its training images were stored, then normalised on the
device as in its evaluation; texts are tokenised and encoded with the run's own vocabulary; a table's rows are
encoded with the column statistics saved in the run's checkpoint. The CSV has one row per input: the input
(its path, or its row in the file or split), the true label where it is known (a split), and the predicted
class's name and probability with the probability of every class, or the predicted number.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from pathlib import Path

from experiments.core.atomic import written_atomically
from experiments.core.errors import PATH_ERRORS, UserError, exit_for

TEXT_SUFFIXES = (".csv", ".jsonl")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
PROGRESS_FROM = 2000  # inputs: a progress bar from this many on

log = logging.getLogger(__name__)


def read_texts(path: Path, column: str) -> list[str]:
    """The `column` of every row of a CSV file (with a header) or of every object of a JSON-lines file, read as a
    text_csv dataset reads its files."""
    from experiments.data.text_csv import read_rows

    rows, columns, _ = read_rows(path)
    if column not in columns:
        raise UserError(f"{path} has no column {column!r} (it has {', '.join(columns)}); choose one with --text-column")
    return [str(row.get(column) or "") for row in rows]


def split_of(datamodule, split: str):
    """A split of the run's data, whole, as its own loader gives it (in memory or streamed, ours or a user's)."""
    import torch

    datamodule.setup("test" if split == "test" else "validate")
    batches = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    inputs, labels = zip(*((x, y) for x, y in batches), strict=True)
    return torch.cat(inputs), torch.cat(labels)


def gather(inputs: list[Path]) -> tuple[list[str], list]:
    """The command line's inputs -> (what each row of the CSV names, what the data module encodes)."""
    from experiments.data.images import image_files

    if len(inputs) == 1 and inputs[0].is_dir():
        files = image_files(inputs[0])
        if not files:
            raise UserError(f"{inputs[0]} holds no image files")
        return [str(f.relative_to(inputs[0])) for f in files], [str(f) for f in files]
    missing = [path for path in inputs if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such file or folder")
    return [str(path) for path in inputs], [str(path) for path in inputs]


def predict(
    path: Path,
    inputs: list[Path],
    out: Path,
    overrides: list[str],
    split: str | None = None,
    text_column: str | None = None,
) -> int:
    """Writes the predictions for `inputs` (or for a `split` of the run's data) to `out`; returns their count."""
    import torch

    from experiments.data.contract import class_names, encode_inputs
    from experiments.run.finished import evaluation_trainer, load

    cfg, datamodule, model, _ = load(path, overrides)
    kind = model.hparams.spec["kind"]  # the model's own: a table's data module would read its file to know it
    labels = None
    if split is not None:
        encoded, y = split_of(datamodule, split)
        names, labels = [str(i) for i in range(len(y))], y.tolist()
    elif kind == "table":
        names, encoded = table_rows(datamodule, inputs)
    elif len(inputs) == 1 and inputs[0].suffix.lower() in TEXT_SUFFIXES:
        if not inputs[0].is_file():
            raise UserError(f"{inputs[0]}: no such file")
        if kind != "text":
            raise UserError(
                f"{inputs[0]} holds texts, but this run was trained on images: give image files or a folder"
            )
        column = text_column or cfg.data.get("text_column", "text")
        texts = read_texts(inputs[0], column)
        names, encoded = [str(i) for i in range(len(texts))], encode_inputs(datamodule, texts)
    elif kind == "text":
        raise UserError("this run was trained on texts: give a .csv or .jsonl file of them (--text-column)")
    else:
        names, items = gather(inputs)
        encoded = encode_inputs(datamodule, items)
    datamodule.predict_on(encoded)
    trainer = evaluation_trainer(cfg, progress=len(encoded) >= PROGRESS_FROM)
    predictions = torch.cat(trainer.predict(model, datamodule=datamodule)).float().cpu()
    if predictions.dim() == 1:  # one number per input: a regression
        known = labels is not None
        rows = [
            [name, *([f"{labels[i]:.8g}"] if known else []), f"{value:.8g}"]
            for i, (name, value) in enumerate(zip(names, predictions.tolist(), strict=True))
        ]
        write_predictions(out, ["input", *(["label"] if known else []), "predicted"], rows)
        return len(names)
    classes = class_names(datamodule, predictions.shape[1])
    best, chosen = predictions.max(dim=1)
    header = ["input", *(["label"] if labels is not None else []), "predicted", "probability"]
    rows = []
    for i, (name, p) in enumerate(zip(names, predictions.tolist(), strict=True)):
        label = [classes[labels[i]]] if labels is not None else []
        row = [name, *label, classes[int(chosen[i])], f"{float(best[i]):.6f}"]
        rows.append(row + [f"{value:.6f}" for value in p])
    write_predictions(out, [*header, *(f"p_{name}" for name in classes)], rows)
    return len(names)


def table_rows(datamodule, inputs: list[Path]):
    """(the name of each row, the rows encoded) of table files: `<row>`, or `<file>:<row>` for several files."""
    from experiments.data.contract import encode_inputs
    from experiments.data.table import read_frame

    wrong = [path for path in inputs if path.suffix.lower() not in TABLE_SUFFIXES]
    if wrong:
        raise UserError(f"{wrong[0]}: this run was trained on a table; give .csv or .parquet files of rows")
    names = []
    for path in inputs:
        rows = len(read_frame(path))
        names += [str(i) if len(inputs) == 1 else f"{path}:{i}" for i in range(rows)]
    return names, encode_inputs(datamodule, [str(path) for path in inputs])


def write_predictions(out: Path, header: list[str], rows: list[list[str]]):
    try:  # a path of the user's: whatever stops the write is theirs to change (a file where a folder should
        # be, no permission, a full disk)
        out.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(out) as temporary, open(temporary, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as error:
        if error.errno not in PATH_ERRORS:
            raise
        reason = error.strerror or str(error)
        raise UserError(f"cannot write the predictions to {out}: {reason}; give --out another path") from error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="experiments predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run directory (its best checkpoint) or a .ckpt file")
    parser.add_argument(
        "inputs",
        nargs="*",
        help="a folder of images, image files, a .csv/.jsonl of texts, or table files (.csv, .parquet); then "
        "changes to the run's config, key=value",
    )
    parser.add_argument("--split", choices=["test", "val"], help="predict a split of the run's own data")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="the CSV to write")
    parser.add_argument("--text-column", help="the texts' column or key (default: the run's, or 'text')")
    args = parser.parse_args(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's errors reach `describe` whole
    overrides = [item for item in args.inputs if "=" in item and not Path(item).exists()]
    inputs = [Path(item) for item in args.inputs if item not in overrides]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the figures below, not Lightning's setup
    try:
        if bool(inputs) == bool(args.split):
            raise UserError("give the inputs to predict (files, a folder, a .csv/.jsonl/.parquet) or --split, not both")
        count = predict(args.path, inputs, args.out, overrides, args.split, args.text_column)
    except (Exception, KeyboardInterrupt) as error:
        exit_for(error)
    print(f"predictions    {count} in {args.out.resolve()}")
