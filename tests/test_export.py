"""`experiments export`: a run written as ONNX, torch.export or TorchScript, with its preprocessing inside, gives the
class probabilities `experiments predict` gives for the same image files and texts; the class names are in the file
and beside it; what cannot be exported is one line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from experiments.data.images import read_images
from experiments.data.text import encode, tokenize
from tests.conftest import REPO, run_cli
from tests.test_image_folder import write_shapes

pytestmark = pytest.mark.slow  # each test trains a run or exports one through the command line

AGREEMENT = 1e-4


def train(run_dir: Path, *overrides: str) -> Path:
    result = run_cli(
        *overrides,
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "logger=none",
        "callbacks.dashboards=null",
        f"hydra.run.dir={run_dir}",
        f"data.data_dir={run_dir.parent / 'data'}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def write_texts(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    words = {"good": ["great", "fine", "love", "nice"], "bad": ["awful", "hate", "poor", "dull"]}
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for _ in range(n):
            label = str(rng.choice(["good", "bad"]))
            text = " ".join(rng.choice([*words[label], "the", "plot", "zebra"], int(rng.integers(3, 14))))
            writer.writerow([text, label])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list]]:
    """Three runs, each with what to predict: a CNN on images, an MLP on texts, a torchvision net on images whose
    weights file is gone after training (a finished run needs only its checkpoint)."""
    root = tmp_path_factory.mktemp("runs")
    write_shapes(root / "photos", 10)
    new_photos = write_shapes(root / "new_photos", 3, seed=5)
    texts = write_texts(root / "texts.csv", 160, seed=0)
    new_texts = write_texts(root / "new_texts.csv", 9, seed=1)
    weights = root / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    images = ["data=image_folder", f"data.root={root / 'photos'}", "data.image_size=16"]
    made = {
        "cnn_images": (train(root / "cnn", "model=cnn", *images), root / "new_photos"),
        "mlp_texts": (train(root / "mlp", "model=mlp", "data=text_csv", f"data.path={texts}"), new_texts),
        "torchvision": (
            train(root / "tv", "model=torchvision", f"model.weights={weights}", *images, "data.channels=1"),
            root / "new_photos",
        ),
    }
    weights.unlink()
    assert new_photos
    return made


def predicted(run: Path, inputs: Path, tmp_path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """`experiments predict`'s rows: each input, its class probabilities, and the class names."""
    out = tmp_path / "predictions.csv"
    result = run_cli("predict", str(run), str(inputs), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out, newline="") as file:
        rows = list(csv.DictReader(file))
    classes = [key.removeprefix("p_") for key in rows[0] if key.startswith("p_")]
    return [row["input"] for row in rows], np.array([[float(row[f"p_{c}"]) for c in classes] for row in rows]), classes


def exported(run: Path, format: str, tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / f"exported_{format}"
    result = run_cli("export", str(run), "--format", format, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    description = json.loads((out / "model.json").read_text())
    return out / description["file"], description


def token_ids(out_dir: Path, description: dict, texts_file: Path) -> np.ndarray:
    vocabulary = json.loads((out_dir / description["vocabulary"]).read_text())
    with open(texts_file, newline="") as file:
        texts = [row["text"] for row in csv.DictReader(file)]
    return encode([tokenize(t) for t in texts], vocabulary, description["inputs"]["shape"][1]).numpy().astype(np.int64)


def inputs_for(description: dict, out_dir: Path, source: Path, names: list[str]) -> np.ndarray:
    if description["inputs"]["name"] == "images":
        return read_images([source / name for name in names], description["inputs"]["shape"][1:], strict=True)[
            0
        ].numpy()
    return token_ids(out_dir, description, source)


@pytest.mark.parametrize("kind", ["cnn_images", "mlp_texts", "torchvision"])
def test_onnx_runtime_gives_the_probabilities_predict_gives(kind, runs, tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the export extra: pip install -e '.[export]'")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra's onnxruntime runs the file")
    run, source = runs[kind]
    names, expected, classes = predicted(run, source, tmp_path)
    path, description = exported(run, "onnx", tmp_path)
    assert description["class_names"] == classes
    assert json.loads(onnx.load(str(path)).metadata_props[0].value) == {"class_names": classes}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = inputs_for(description, path.parent, source, names)
    assert x.dtype == (np.uint8 if description["inputs"]["name"] == "images" else np.int64)
    name = description["inputs"]["name"]
    assert [i.name for i in session.get_inputs()] == [name] and name in ("images", "token_ids")
    found = session.run(None, {name: x})[0]
    assert found.shape == expected.shape
    assert np.abs(found - expected).max() < AGREEMENT
    one = session.run(None, {name: x[:1]})[0]  # any batch size
    assert np.abs(one - expected[:1]).max() < AGREEMENT


@pytest.mark.parametrize("kind", ["cnn_images", "mlp_texts", "torchvision"])
def test_torch_export_loads_back_and_agrees(kind, runs, tmp_path):
    run, source = runs[kind]
    names, expected, classes = predicted(run, source, tmp_path)
    path, description = exported(run, "torch_export", tmp_path)
    extra = {"experiments.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra["experiments.json"]) == {"class_names": classes}
    x = torch.from_numpy(inputs_for(description, path.parent, source, names))
    found = program.module()(x).detach().numpy()
    assert np.abs(found - expected).max() < AGREEMENT


def test_torchscript_loads_back_and_agrees(runs, tmp_path):
    run, source = runs["cnn_images"]
    names, expected, _ = predicted(run, source, tmp_path)
    path, description = exported(run, "torchscript", tmp_path)
    x = torch.from_numpy(inputs_for(description, path.parent, source, names))
    with pytest.warns(FutureWarning):  # torch deprecates TorchScript for torch.export
        module = torch.jit.load(str(path))
    assert np.abs(module(x).detach().numpy() - expected).max() < AGREEMENT


class DataDependent(nn.Module):
    """A net whose forward branches on its input's values in Python: torch.export cannot capture it."""

    def __init__(self, spec: dict, **cnn_settings) -> None:  # the default model config's keys, unused
        super().__init__()
        channels, height, width = spec["shape"]
        self.linear = nn.Linear(channels * height * width, spec["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits if float(x.mean()) > -100 else -logits


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_what_cannot_be_exported_is_one_line(runs, tmp_path):
    run, _ = runs["cnn_images"]
    line = one_line(run_cli("export", str(run), "--format", "tflite", cwd=tmp_path))
    assert line.startswith("error: --format 'tflite' is not a format: choose onnx, torch_export, torchscript")

    (tmp_path / "a_file").write_text("")
    line = one_line(
        run_cli("export", str(run), "--format", "torch_export", "--out", str(tmp_path / "a_file" / "x"), cwd=tmp_path)
    )
    assert line.startswith(f"error: cannot write to {tmp_path / 'a_file' / 'x'}: Not a directory; give --out another")

    empty = tmp_path / "no_checkpoint"
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text((run / ".hydra" / "config.yaml").read_text())
    line = one_line(run_cli("export", str(empty), "--out", str(tmp_path / "out"), cwd=tmp_path))
    assert line.startswith(f"error: {empty} holds no checkpoint")
    assert not (tmp_path / "out").exists()

    odd = train(
        tmp_path / "odd", "model._target_=tests.test_export.DataDependent", "data=digits", "data.batch_size=256"
    )
    line = one_line(run_cli("export", str(odd), "--format", "torch_export", "--out", str(tmp_path / "o"), cwd=REPO))
    assert line.startswith("error: this net cannot be exported as torch_export (")
    assert line.split("; ")[-1].split("  (")[0] in ("--format onnx works for it", "--format torchscript works for it")
    assert not (tmp_path / "o" / "model.pt2").exists()


def test_onnx_without_its_packages_is_one_line_naming_the_extra(runs, tmp_path, monkeypatch, capsys):
    from experiments.commands.export import main

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: its import fails
    with pytest.raises(SystemExit) as exit_:
        main([str(runs["cnn_images"][0]), "--format", "onnx", "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1
    assert "pip install 'experiments[export]'; --format torch_export needs nothing more" in lines[0]
