"""Tables and regression: the column encoding, the bundled tables against scikit-learn, predictions on new rows,
a regression sweep's summary, and every bad input as one line with exit code 2."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.core.errors import UserError
from experiments.data.table import BundledTableDataModule, TableCSVDataModule
from experiments.data.table_encoding import TableEncoding
from tests.conftest import run_cli


def houses(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A small table of every column type: numbers (one with gaps), a category, a boolean, a price and a class."""
    rng = np.random.default_rng(seed)
    rooms = rng.integers(1, 6, n).astype(float)
    area = rng.normal(80, 20, n)
    area[::7] = np.nan  # missing values
    district = rng.choice(["north", "south", "east"], n)
    garden = rng.random(n) < 0.5
    price = (
        50 * rooms + 2 * np.nan_to_num(area, nan=80) + 30 * garden + (district == "north") * 40 + rng.normal(0, 5, n)
    )
    size = np.where(rooms >= 3, "large", "small")
    return pd.DataFrame(
        {"rooms": rooms, "area": area, "district": district, "garden": garden, "price": price, "size": size}
    )


def table_module(path: Path, **settings) -> TableCSVDataModule:
    return TableCSVDataModule(path=str(path), data_dir=str(path.parent / "data"), **settings)


# The encoding: statistics of the training rows only, unseen categories, missing values.
def test_the_training_rows_alone_shape_the_encoding(tmp_path):
    frame = houses()
    frame.iloc[:90].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[90:].to_csv(tmp_path / "test.csv", index=False)
    settings = {"test_path": str(tmp_path / "test.csv"), "label_column": "price", "task": "regression"}
    first = table_module(tmp_path / "train.csv", **settings)
    first.setup("fit")
    changed = frame.iloc[90:].copy()
    changed["area"] = changed["area"] * 100  # only the test rows change
    changed["district"] = "west"  # a category the training rows never had
    changed.to_csv(tmp_path / "test.csv", index=False)
    second = table_module(tmp_path / "train.csv", **settings)
    second.setup("fit")
    for split in ("train", "val"):
        for a, b in zip(first.splits[split], second.splits[split], strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(first.splits["test"][0], second.splits["test"][0])
    names = second.encoding.feature_names
    other = names.index("district=(other)")
    assert second.splits["test"][0][:, other].eq(1).all() and first.splits["test"][0][:, other].eq(0).all()
    # The training part's standardised numbers have mean 0 and standard deviation 1.
    rooms = second.splits["train"][0][:, names.index("rooms")]
    assert rooms.mean().abs() < 1e-5 and (rooms.std(unbiased=False) - 1).abs() < 1e-4


def test_missing_values_are_filled_and_marked_or_refused():
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0, 5.0], "b": ["x", None, "y", "x"], "c": [True, False, None, True]})
    encoding = TableEncoding.fit(frame, ["a", "b", "c"], {}, "indicator", 50)
    assert encoding.feature_names == ["a", "a (missing)", "b=(missing)", "b=x", "b=y", "b=(other)", "c", "c (missing)"]
    rows = encoding.encode(frame)
    assert rows[1, 0] == 0 and rows[1, 1] == 1 and rows[0, 1] == 0  # the mean, standardised, and its mark
    assert rows[1, 2] == 1 and rows[2, 6] == 0.5 and rows[2, 7] == 1
    with pytest.raises(UserError, match=re.escape("column 'a' has 1 missing values; fill them, or set data.missing")):
        TableEncoding.fit(frame, ["a"], {}, "error", 50)
    restored = TableEncoding(encoding.state())  # plain values, as checkpoints keep them
    assert torch.equal(restored.encode(frame), rows)


def test_bundled_tables_split_by_class_and_describe_themselves(tmp_path):
    cancer = BundledTableDataModule(name="breast_cancer", task="classification", data_dir=str(tmp_path), val_size=0.2)
    assert cancer.spec == {"kind": "table", "features": 30, "task": "classification", "num_classes": 2}
    assert cancer.class_names == ["benign", "malignant"]
    sizes = {name: len(y) for name, (_, y) in cancer.splits.items()}
    assert sum(sizes.values()) == 569 and sizes["test"] == 114
    shares = [cancer.splits[s][1].float().mean().item() for s in ("train", "val", "test")]
    assert max(shares) - min(shares) < 0.02  # stratified: each part keeps the classes' proportions
    diabetes = BundledTableDataModule(name="diabetes", task="regression", data_dir=str(tmp_path))
    spec = diabetes.spec
    assert spec["task"] == "regression" and spec["features"] == 10
    train_y = diabetes.splits["train"][1]
    assert train_y.dtype == torch.float32 and spec["target_mean"] == pytest.approx(train_y.double().mean().item())


# Against scikit-learn, on the same split and the same encoding.
@pytest.mark.slow
def test_a_linear_model_matches_scikit_learns_linear_regression(make_config):
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    from experiments.run.task import train

    cfg = make_config(
        "data=diabetes", "model=mlp", "model.depth=0", "optimizer.lr=0.02", "optimizer.weight_decay=0",
        "trainer.max_epochs=200", "logger=none",
    )  # fmt: skip
    train(cfg)
    ours = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["test"]["test/r2"]
    data = BundledTableDataModule(name="diabetes", task="regression", data_dir=cfg.paths.data_dir, split_seed=42)
    data.setup("fit")
    (x, y), (x_test, y_test) = data.splits["train"], data.splits["test"]
    theirs = r2_score(y_test.numpy(), LinearRegression().fit(x.numpy(), y.numpy()).predict(x_test.numpy()))
    assert ours == pytest.approx(theirs, abs=0.02)


@pytest.mark.slow
def test_an_mlp_matches_scikit_learns_logistic_regression(make_config):
    from sklearn.linear_model import LogisticRegression

    from experiments.run.task import train

    cfg = make_config("data=breast_cancer", "model=mlp", "trainer.max_epochs=30", "logger=none")
    train(cfg)
    ours = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["test"]["test/acc"]
    data = BundledTableDataModule(
        name="breast_cancer", task="classification", data_dir=cfg.paths.data_dir, split_seed=42
    )
    data.setup("fit")
    (x, y), (x_test, y_test) = data.splits["train"], data.splits["test"]
    theirs = LogisticRegression(max_iter=5000).fit(x.numpy(), y.numpy()).score(x_test.numpy(), y_test.numpy())
    assert ours >= theirs - 0.02


# The command line: training, predictions on new rows, the figures, a sweep.
def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
@pytest.mark.parametrize(("label", "task"), [("price", "regression"), ("size", "classification")])
def test_predictions_on_new_rows_are_the_runs_own(tmp_path, label, task):
    frame = houses()
    frame.iloc[:100].to_csv(tmp_path / "train.csv", index=False)
    test = frame.iloc[100:].drop(columns=[label])  # new rows come without their label
    test.to_parquet(tmp_path / "new.parquet")
    frame.iloc[100:].to_csv(tmp_path / "test.csv", index=False)
    run = tmp_path / "run"
    trained = run_cli(
        "data=table_csv", f"data.path={tmp_path / 'train.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
        f"data.label_column={label}", f"data.task={task}", "model=mlp", "trainer.max_epochs=5",
        f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    for args, out in ((["--split", "test"], "split.csv"), ([str(tmp_path / "new.parquet")], "new.csv")):
        predicted = run_cli("predict", str(run), *args, "--out", str(tmp_path / out), cwd=tmp_path)
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        (tmp_path / "train.csv").unlink(missing_ok=True)  # new rows need only the encoding the checkpoint holds
    new, split = read_csv(tmp_path / "new.csv"), read_csv(tmp_path / "split.csv")
    assert len(new) == len(split) == 20
    if task == "regression":
        assert [float(r["predicted"]) for r in new] == pytest.approx([float(r["predicted"]) for r in split], rel=1e-5)
        assert list(new[0]) == ["input", "predicted"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["objective"]["metric"] == "val/rmse" and metrics["objective"]["mode"] == "min"
        assert {"test/rmse", "test/mae", "test/r2", "test/loss"} == set(metrics["test"])
        assert "test RMSE" in trained.stderr + trained.stdout
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
        events.Reload()
        assert {"test/predicted_vs_true", "test/residuals"} <= set(events.Tags()["images"])
        assert "test/confusion_matrix" not in events.Tags()["images"]
    else:
        assert [r["predicted"] for r in new] == [r["predicted"] for r in split]
        assert [r["p_large"] for r in new] == [r["p_large"] for r in split]
    # Exported with its encoding beside it: ONNX Runtime on rows encoded as encoding.json says gives predict's figures.
    exported = run_cli("export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    import onnxruntime

    description = json.loads((tmp_path / "onnx" / "model.json").read_text())
    encoding = TableEncoding(json.loads((tmp_path / "onnx" / description["encoding"]).read_text()))
    rows = encoding.encode(pd.read_parquet(tmp_path / "new.parquet")).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    served = session.run(None, {description["inputs"]["name"]: rows})[0]
    if task == "regression":
        assert description["outputs"]["name"] == "values" and description["task"] == "regression"
        assert served.tolist() == pytest.approx([float(r["predicted"]) for r in new], rel=1e-5)
    else:
        assert description["class_names"] == ["large", "small"]
        assert served[:, 0].tolist() == pytest.approx([float(r["p_large"]) for r in new], abs=1e-5)
    missing = tmp_path / "missing.csv"
    test.drop(columns=["district"]).to_csv(missing, index=False)
    refused = run_cli("predict", str(run), str(missing), "--out", str(tmp_path / "x.csv"), cwd=tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {missing} lacks the column(s) the model was trained on: district")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_a_regression_sweep_ranks_by_rmse_lowest_first(tmp_path):
    result = run_cli(
        "-m", "data=diabetes", "model=mlp", "model.width=4,64", "trainer.max_epochs=3", "logger=none",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.data_dir={tmp_path / 'data'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "val/rmse (min)" in summary
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    objectives = [float(r["objective"]) for r in rows]
    assert objectives == sorted(objectives) and "test/rmse" in rows[0] and "test/acc" not in rows[0]


# Bad input: one line, exit code 2, no run left half-written.
def bad_tables(folder: Path) -> dict[str, Path]:
    frame = houses(20)
    files = {}
    for name, table in {
        "one_class": frame.assign(size="large"),
        "text_price": frame.assign(price="cheap"),
        "empty_column": frame.assign(area=np.nan),
    }.items():
        files[name] = folder / f"{name}.csv"
        table.to_csv(files[name], index=False)
    files["json"] = folder / "rows.json"
    files["json"].write_text("[]")
    files["good"] = folder / "good.csv"
    frame.to_csv(files["good"], index=False)
    return files


@pytest.mark.slow
def test_bad_tables_and_settings_are_one_line_each(tmp_path):
    files = bad_tables(tmp_path)
    cases = [
        (["data.path={good}", "data.label_column=cost"], "has no label column 'cost' (it has rooms, area, district"),
        (["data.path={one_class}", "data.label_column=size"], "every training row's 'size' is 'large'"),
        (["data.path={text_price}", "data.label_column=price", "data.task=regression"], "data.task=regression needs"),
        (["data.path={empty_column}", "data.label_column=size"], "feature column 'area' is entirely empty"),
        (["data.path={json}", "data.label_column=size"], "is not a CSV or Parquet file (.csv, .parquet)"),
        (
            ["data.path={good}", "data.label_column=price", "data.task=regression", "label_smoothing=0.1"],
            "label_smoothing=0.1 smooths class labels: regression has none; leave it at 0",
        ),
        (["data.path={good}", "data.label_column=size"], "model=cnn reads images and texts, not a table"),
    ]
    for overrides, message in cases:
        run = tmp_path / "run"
        args = [o.format(**files) for o in overrides]
        model = [] if "model=cnn" in message else ["model=mlp"]  # (cnn: the default)
        result = run_cli("data=table_csv", *model, *args, f"paths.output_dir={run}", cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr[-1500:])
        assert not (run / "metrics.json").exists()


def test_a_tables_folds_partition_its_training_rows_and_leave_the_test_alone(tmp_path):
    houses(90).to_csv(tmp_path / "houses.csv", index=False)
    val_sizes, val_classes, tests = [], torch.zeros(2), []
    for fold in range(3):
        data = table_module(tmp_path / "houses.csv", label_column="size", folds=3, fold=fold)
        data.setup("fit")
        (_, train), (_, val), (_, test) = (data.splits[s] for s in ("train", "val", "test"))
        assert len(train) + len(val) == 72  # the 80 % left after the test part, in every fold
        val_sizes.append(len(val))
        val_classes += torch.bincount(val, minlength=2)
        tests.append(test)
    assert sum(val_sizes) == 72 and max(val_sizes) - min(val_sizes) <= 1  # each row validates once
    assert val_classes.tolist() == torch.bincount(torch.cat([train, val]), minlength=2).tolist()
    assert all(torch.equal(tests[0], t) for t in tests)  # the same test rows, in the same order
    with pytest.raises(UserError, match=re.escape("data.fold=3 is not allowed")):
        table_module(tmp_path / "houses.csv", label_column="size", folds=3, fold=3)
