"""MLflow and W&B beside TensorBoard: the same params, metrics, figures, tags and notes in each, read back the way
a user would (MLflow's own client on its local store, W&B's offline run files); a tracker without its extra is one
line. A tracking server, answering, silent or dying: test_tracking_server.py. Nothing here reaches beyond 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from experiments.core.config import validate
from experiments.core.errors import UserError
from experiments.reporting.loggers.base import flat_config
from experiments.reporting.loggers.mlflow import MLflow
from experiments.reporting.loggers.wandb import Wandb
from experiments.run.task import train
from tests.conftest import run_cli

SHORT = ("model=mlp", "trainer.max_epochs=2", "trainer.accelerator=cpu")  # the digits: 20 steps an epoch


def test_the_params_are_the_composed_config_under_dotted_keys(make_config):
    params = flat_config(make_config("model=cnn", "tags=[baseline,v2]"))
    assert params["model.channels"] == "[32, 64]" and params["optimizer.lr"] == 0.003 and params["seed"] == 42
    assert params["tags"] == "['baseline', 'v2']" and params["notes"] == "None"
    assert params["trainer.max_epochs"] == 20 and params["data._target_"].endswith("DigitsDataModule")
    assert all(isinstance(value, str | int | float | bool) for value in params.values())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tags=baseline"], "tags='baseline' is not allowed: it must be a list of words, e.g. [baseline,v2]"),
        (["tags=[a,'']"], "tags=['a', ''] is not allowed: it must be a list of words"),
        (["notes=[1,2]"], "notes=[1, 2] is not allowed: it must be a text"),
    ],
)
def test_tags_and_notes_of_the_wrong_kind_are_one_line(make_config, overrides, message):
    with pytest.raises(UserError) as caught:
        validate(make_config(*overrides))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("factory", "package"), [(MLflow, "mlflow"), (Wandb, "wandb")])
def test_a_tracker_without_its_extra_is_one_line(monkeypatch, tmp_path, factory, package):
    monkeypatch.setitem(sys.modules, package, None)  # what `import` finds when the package is not installed
    with pytest.raises(UserError) as caught:
        factory(store_dir=str(tmp_path)) if package == "mlflow" else factory(save_dir=str(tmp_path))
    assert str(caught.value) == (
        f"logger={package} needs {package}, which comes with the tracking extra: pip install 'experiments[tracking]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_run_in_the_local_mlflow_store_has_the_config_metrics_figures_tags_and_notes(make_config, tmp_path):
    from mlflow import MlflowClient

    store = tmp_path / "store"
    cfg = make_config(
        *SHORT,
        "logger=mlflow",
        f"logger.mlflow.store_dir={store}",
        "logger.mlflow.tracking_uri=null",
        "tags=[baseline,v2]",
        "notes='why: a first look'",
    )
    train(cfg)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the next run in this process (a sweep's job) starts afresh
    client = MlflowClient(f"sqlite:///{(store / 'mlflow.db').as_posix()}")
    (run,) = client.search_runs([client.get_experiment_by_name("experiments").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.width"] == "256" and run.data.params["tags"] == "['baseline', 'v2']"
    assert {"baseline", "v2"} <= set(run.data.tags) and run.data.tags["mlflow.note.content"] == "why: a first look"
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [point.step for point in history] == [19, 39]  # one point per validation, at its global step
    local = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(local["test"]["test/acc"])
    assert local["tags"] == ["baseline", "v2"] and local["notes"] == "why: a first look"
    artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "downloaded")))
    assert json.loads((artifacts / "metrics.json").read_text()) == local
    assert "width: 256" in (artifacts / "config.yaml").read_text()
    figures = sorted(path.relative_to(artifacts / "figures").as_posix() for path in artifacts.glob("figures/**/*.png"))
    assert figures == [
        "test/confusion_matrix/step-0000040.png",
        "test/misclassified/step-0000040.png",
        "val/confusion_matrix/step-0000040.png",
        "val/misclassified/step-0000040.png",
    ]
    for figure in figures:
        with Image.open(artifacts / "figures" / figure) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_a_plain_lightning_logger_gets_the_params_and_the_curves(make_config, caplog):
    # Not one of ours (a user's CometLogger, say): Lightning's own calls only, the params among them.
    cfg = make_config(*SHORT, "logger=csv", "logger.csv._target_=lightning.pytorch.loggers.CSVLogger")
    with caplog.at_level("INFO"):
        train(cfg)
    logged = Path(cfg.paths.output_dir) / "csv"
    params = yaml.safe_load((logged / "hparams.yaml").read_text())
    assert params["model.width"] == 256 and params["trainer.max_epochs"] == 2 and params["tags"] == "[]"
    with (logged / "metrics.csv").open() as rows:
        assert [row["step"] for row in csv.DictReader(rows) if row["val/acc"]] == ["19", "39"]
    assert "run directory" in caplog.text and "dashboard" not in caplog.text  # it names no viewer


# The command line against a real MLflow server, a sweep in the local store, and W&B offline.


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_experiment_with_a_run_per_job_beside_tensorboard_and_csv(tmp_path):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli("-m", "model.dropout=0.0,0.1,0.2", *SHORT, "logger=many", "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    client = MlflowClient(f"sqlite:///{(tmp_path / 'outputs' / 'mlflow.db').as_posix()}")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == f"train/{sweep_dir.name}"
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(run.info.run_name for run in runs)
    swept = (
        f"logger=many,model.dropout={d},model=mlp,trainer.accelerator=cpu,trainer.max_epochs=1" for d in (0.0, 0.1, 0.2)
    )
    assert names == list(swept)  # each run named by its job's overrides
    assert sorted(run.data.params["model.dropout"] for run in runs) == ["0.0", "0.1", "0.2"]
    for job in ("0", "1", "2"):
        events = EventAccumulator(str(sweep_dir / job / "tensorboard"), size_guidance={"images": 0})
        events.Reload()
        assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(events.Tags()["images"])  # drawn once, for both
        assert (sweep_dir / job / "csv" / "metrics.csv").is_file()
    for run in runs:
        listed = client.list_artifacts(run.info.run_id, "figures/test/confusion_matrix")
        assert [Path(f.path).name for f in listed] == ["step-0000020.png"]


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header, then 32 KiB blocks of chunks, each
    a 7-byte header (checksum, length, kind: full, first, middle or last part of a record) and its bytes."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, records, pending = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # the block's tail is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B writes "val/acc" as the nested key ["val", "acc"]


@pytest.mark.slow
def test_wandb_offline_keeps_each_jobs_config_history_figures_tags_and_notes_in_its_run_folder(tmp_path):
    sweep = ("-m", "model.dropout=0.0,0.1", "logger=wandb", "tags=[smoke]", "notes=first")
    result = run_cli(*sweep, *SHORT, cwd=tmp_path, env={"WANDB_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    for job, dropout in (("0", 0.0), ("1", 0.1)):  # each job a run of its own, though both ran in one process
        run_dir = sweep_dir / job
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        records = wandb_records(next(offline.glob("run-*.wandb")))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert list(run.tags) == ["smoke"] and run.notes == "first" and run.run_group == sweep_dir.name
        overrides = ["logger=wandb", f"model.dropout={dropout}", "model=mlp", "notes=first", "tags=[smoke]"]
        assert run.display_name == ",".join([*overrides, "trainer.accelerator=cpu", "trainer.max_epochs=2"])
        config = {key(u): json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update}
        assert config["model.dropout"] == dropout and config["trainer.max_epochs"] == 2
        history = [{key(i): json.loads(i.value_json) for i in r.history.item} for r in records if r.HasField("history")]
        assert [h["trainer/global_step"] for h in history if "val/acc" in h] == [19, 39]
        local = json.loads((run_dir / "metrics.json").read_text())
        (test,) = [h for h in history if "test/acc" in h]
        assert test["test/acc"] == pytest.approx(local["test"]["test/acc"])
        drawn = [h for h in history if "test/confusion_matrix/filenames" in h]
        (image_file,) = drawn[0]["test/confusion_matrix/filenames"]
        with Image.open(offline / "files" / image_file) as image:
            image.verify()
        assert json.loads((offline / "files" / "metrics.json").read_text()) == local
        assert "max_epochs: 2" in (offline / "files" / "config.composed.yaml").read_text()
        assert f"dashboard      wandb sync {offline}\n" in result.stdout + result.stderr
