"""A finished run as one file that serves without this package: the data's preprocessing, the net and the task's
output in one module, written as ONNX, a `torch.export` program or TorchScript, with the class names inside it and
in a JSON file beside it (and, for texts, the vocabulary; for tables, the column encoding).

    deployed = deployable(run)          # raw inputs -> probabilities (or numbers), in eval mode
    write(deployed, "onnx", out_dir)    # out_dir/model.onnx, model.json (and vocabulary.json or encoding.json)

Inputs are what a user has: uint8 images (batch, channels, height, width) at the run's size, RGB or grey as it
trained (normalised inside), int64 token ids (batch, seq_len) encoded with the vocabulary written beside, or a
table's rows as float32 numbers (batch, features) encoded as encoding.json says. The batch size is free. Outputs
are the task's predictions (models/tasks.py): each class's probability, or a regression's number in the label's
unit. Each format is checked after it is written: the file is loaded back and run on a batch of another size, and
must agree with the run's own net.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.core.atomic import written_atomically
from experiments.core.errors import PATH_ERRORS, UserError, first_line

FORMATS = {"onnx": "model.onnx", "torch_export": "model.pt2", "torchscript": "model.pt"}
AGREEMENT = 1e-4  # largest difference in any probability between the written file and the run's own net


class Deployed(nn.Module):
    """Raw inputs -> the data's preprocessing -> the net -> the task's output."""

    def __init__(self, preprocessing: nn.Module, net: nn.Module, output: nn.Module) -> None:
        super().__init__()
        self.preprocessing, self.net, self.output = preprocessing, net, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.net(self.preprocessing(x)))


class TaskPredictions(nn.Module):
    """The net's outputs -> what the run's task predicts: probabilities, or numbers in the label's unit."""

    def __init__(self, task) -> None:
        super().__init__()
        self.task = task

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.task.predictions(outputs)


@dataclass
class Deployable:
    """The module to write, an example of its inputs, what the JSON beside it says, and other JSON files to write
    beside it (the vocabulary of texts, the encoding of a table's columns), by name."""

    module: Deployed
    example: torch.Tensor
    description: dict
    beside: dict[str, object] | None = None


def deployable(path: Path, overrides: list[str]) -> Deployable:
    """The run at `path` (a run directory or a checkpoint) as a `Deployable`, on the CPU in float32."""
    from experiments.data.contract import class_names, preprocessing
    from experiments.run.finished import load

    cfg, datamodule, model, checkpoint = load(path, overrides)
    spec = model.hparams.spec  # the model's own: a table's data module would read its file to know it
    module = Deployed(preprocessing(datamodule), model.net, TaskPredictions(model.task)).eval().float()
    beside: dict[str, object] = {}
    if spec["kind"] == "table":
        example = torch.randn(2, spec["features"])
        encoding = datamodule.encoding
        inputs = {
            "name": "rows",
            "dtype": "float32",
            "shape": ["batch", spec["features"]],
            "what": "a table's rows encoded as encoding.json says, in the order of its feature_names: numbers "
            "standardised by their mean and std, booleans 0 or 1, a one-hot slot per category (the last, (other), "
            "for any category not listed), a missing number as 0 (the mean) with 1 in its (missing) column",
        }
        beside["encoding.json"] = {**encoding.state(), "feature_names": encoding.feature_names}
    elif spec["kind"] == "image":
        channels, height, width = spec["shape"]
        example = torch.randint(0, 256, (2, channels, height, width), dtype=torch.uint8)
        inputs = {
            "name": "images",
            "dtype": "uint8",
            "shape": ["batch", channels, height, width],
            "what": f"pixels 0..255, {'RGB' if channels == 3 else 'grey'}, channels first, resized to "
            f"{height}x{width} as the run's images were (Pillow, Lanczos); normalised inside the model",
        }
    else:  # texts
        example = torch.randint(0, spec["vocab_size"], (2, spec["seq_len"]), dtype=torch.int64)
        example[1, spec["seq_len"] // 2 :] = spec["pad_index"]
        inputs = {
            "name": "token_ids",
            "dtype": "int64",
            "shape": ["batch", spec["seq_len"]],
            "what": "token ids from vocabulary.json (lower-cased words and punctuation apart, as "
            "experiments.data.text.tokenize; an unknown token is 1), the first seq_len tokens, right-padded with "
            f"pad_index {spec['pad_index']}",
            "pad_index": spec["pad_index"],
            "unknown_index": 1,
        }
    if model.task.name == "regression":
        label = getattr(datamodule, "label_column", "value")  # a bundled table's comes with it, not its config
        outputs = {"name": "values", "dtype": "float32", "shape": ["batch"], "what": f"the predicted {label}"}
        about: dict = {"task": "regression"}
    else:
        names = class_names(datamodule, spec["num_classes"])
        outputs = {"name": "probabilities", "dtype": "float32", "shape": ["batch", len(names)]}
        about = {"class_names": names}
    description = {
        "inputs": inputs,
        "outputs": outputs,
        **about,
        "net": cfg.model.get("_target_"),
        "checkpoint": checkpoint.name,
    }
    if spec["kind"] == "text":
        datamodule.setup("predict")  # the vocabulary is read with the data
        vocabulary = getattr(datamodule, "vocabulary", None)
        if vocabulary is not None:
            beside["vocabulary.json"] = list(vocabulary)
    return Deployable(module, example, description, beside)


def export(deployable: Deployable, format: str, out_dir: Path) -> list[Path]:
    """Write the model in `format` into `out_dir` with its JSON (and vocabulary); the files written. A net that
    cannot be written so is one line that names a format that works for it."""
    if format not in FORMATS:
        raise UserError(f"--format {format!r} is not a format: choose {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made is the user's to change (the command)
    try:
        path = write_checked(deployable, format, out_dir)
    except UserError:
        raise
    except Exception as error:
        if isinstance(error, OSError) and error.errno in PATH_ERRORS:  # not the net's: a full disk, no permission
            raise
        works = [other for other in FORMATS if other != format and writes(deployable, other)]
        then = f"--format {works[0]} works for it" if works else "no format works for it"
        raise UserError(f"this net cannot be exported as {format} ({first_line(str(error))[:300]}); {then}") from error
    files = [path]
    description = {"format": format, "file": path.name, **deployable.description}
    for name, value in (deployable.beside or {}).items():
        files.append(write_json(out_dir / name, value))
        description[name.removesuffix(".json")] = name  # "vocabulary": "vocabulary.json"
    files.append(write_json(out_dir / "model.json", description))
    return files


def writes(deployable: Deployable, format: str) -> bool:
    """Whether the net can be written in `format` (into a folder that is thrown away)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            write_checked(deployable, format, Path(folder))
        except Exception:
            return False
    return True


def write_checked(deployable: Deployable, format: str, out_dir: Path) -> Path:
    """The model written in `format`, loaded back and run on a batch of three: it must agree with the net."""
    module, example = deployable.module, deployable.example
    about = ("class_names", "task")
    metadata = json.dumps({key: value for key, value in deployable.description.items() if key in about})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FORMATS[format]
    temporary = path.with_name(f"{path.stem}.part{path.suffix}")  # renamed when whole; its suffix, as torch wants
    writer = {"onnx": write_onnx, "torch_export": write_torch_export, "torchscript": write_torchscript}[format]
    try:
        with quiet_exporters():
            names = (deployable.description["inputs"]["name"], deployable.description["outputs"]["name"])
            writer(module, example, temporary, metadata, names)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    batch = torch.cat([example, example[:1]])  # another batch size than the example's: the batch size is free
    with torch.no_grad():
        expected = module(batch)
    found = run_file(path, format, batch)
    difference = 0.0 if found is None else (found - expected).abs().max().item()
    if not difference <= AGREEMENT:
        path.unlink()
        raise RuntimeError(f"the written file's outputs differ from the net's by {difference:.2g}")
    return path


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """The exporters' warnings, log lines and prints about their own internals (deprecations, graph passes, the
    partial graph torch.export prints when it fails) silenced: nothing in them is the user's to act on, and a failure
    still raises."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path, metadata: str, names: tuple[str, str]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  torch's ONNX exporter needs it
    except ImportError as error:
        raise UserError(
            f"exporting to ONNX needs the onnx and onnxscript packages ({error.name} is missing): "
            "pip install 'experiments[export]'; --format torch_export needs nothing more"
        ) from None
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamic_shapes={"x": {0: batch}},
            input_names=[names[0]],
            output_names=[names[1]],
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"experiments": metadata})
    onnx.save(model, str(path))


def write_torch_export(module: nn.Module, example: torch.Tensor, path: Path, metadata: str, names: tuple) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}}, strict=False)
    torch.export.save(program, str(path), extra_files={"experiments.json": metadata})


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path, metadata: str, names: tuple) -> None:
    with torch.no_grad(), warnings.catch_warnings():  # torch deprecates TorchScript for torch.export: said in --help
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"experiments.json": metadata})


def run_file(path: Path, format: str, batch: torch.Tensor) -> torch.Tensor | None:
    """The written file's outputs for `batch`, as a user of that format would get them; None for an ONNX file where
    ONNX Runtime is not installed (torch's exporter checked the graph it wrote)."""
    if format == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0])
    if format == "torch_export":
        return torch.export.load(str(path)).module()(batch).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))(batch).detach()


def write_json(path: Path, value) -> Path:
    with written_atomically(path) as temporary:
        temporary.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
    return path
