"""examples/custom: a user's own package (a net and a data module) and config folder, trained, reloaded and
used for predictions through the command line, with nothing of the package edited."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import best_checkpoint, run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("custom") / "run"
    result = run_cli(
        *("--config-dir", "conf", "model=tiny_resnet", "data=shapes", "data.count=900", "trainer.max_epochs=3"),
        "callbacks=diagnostics",
        f"hydra.run.dir={run_dir}",
        cwd=EXAMPLE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_the_users_net_and_data_train_from_their_own_config_folder(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] > 0.8  # three shapes: chance is a third


def test_the_users_callback_runs_beside_the_packages_own(trained):
    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    norms = [tag for tag in events.Tags()["scalars"] if tag.startswith("weight_norm/")]
    assert "weight_norm/stem.0.weight" in norms and len(events.Scalars(norms[0])) == 3  # one a training epoch
    assert (trained / "checkpoints" / "last.ckpt").is_file()  # the default callbacks are still there


def test_the_checkpoint_names_the_users_net_and_loads_weights_only(trained, monkeypatch):
    from experiments.models.model import Model

    best = best_checkpoint(trained)
    checkpoint = torch.load(best, weights_only=True)  # plain values only: the class is a dotted path
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "my_project.nets.TinyResNet"
    monkeypatch.syspath_prepend(str(EXAMPLE))
    model = Model.load_from_checkpoint(best, weights_only=True)
    assert type(model.net).__name__ == "TinyResNet"
    monkeypatch.delitem(sys.modules, "my_project", raising=False)


def test_the_users_data_module_predicts_new_files(trained, tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        from my_project.data import SHAPES, draw
    finally:
        sys.path.remove(str(EXAMPLE))
    rng = np.random.default_rng(7)
    folder = tmp_path / "new"
    folder.mkdir()
    truth = {}
    for i in range(30):
        kind = i % 3
        Image.fromarray(draw(kind, 16, rng)).save(folder / f"{i:02d}.png")
        truth[f"{i:02d}.png"] = SHAPES[kind]
    out = tmp_path / "predictions.csv"
    result = run_cli(str(trained), str(folder), "--out", str(out), cwd=EXAMPLE, module="experiments.predict")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["input", "predicted", "probability", "p_circle", "p_square", "p_triangle"]
    assert sum(row["predicted"] == truth[row["input"]] for row in rows) >= 24


def test_a_checkpoint_whose_net_cannot_be_imported_is_one_line(trained, tmp_path):
    # Outside the example's folder its package is not importable.
    result = run_cli(str(trained), "--split", "test", cwd=tmp_path, module="experiments.predict")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [  # the data module is built first, by the one mechanism
        "error: data._target_='my_project.data.ShapesDataModule' cannot be imported: no module named 'my_project'"
        "  (EXPERIMENTS_DEBUG=1 shows the traceback)"
    ]


def test_a_split_of_the_users_data_is_predicted_through_its_own_loader(trained, tmp_path):
    out = tmp_path / "test.csv"
    result = run_cli(str(trained), "--split", "test", "--out", str(out), cwd=EXAMPLE, module="experiments.predict")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    accuracy = sum(row["label"] == row["predicted"] for row in rows) / len(rows)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert len(rows) == 300 and accuracy == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)


def test_the_docs_show_the_example_callback_as_it_is():
    docs = (EXAMPLE.parents[1] / "docs" / "extending.md").read_text().split("## A callback", 1)[1]
    shown = docs.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown in (EXAMPLE / "my_project" / "callbacks.py").read_text()
    config = docs.split("```yaml\n", 1)[1].split("```", 1)[0].split("\n", 1)[1]  # below its comment line
    assert config in (EXAMPLE / "conf" / "callbacks" / "diagnostics.yaml").read_text()
