"""Write a trained run as a file that serves without this package: ONNX, torch.export or TorchScript.

    experiments export outputs/train/runs/<run> --format onnx --out deployed/      # model.onnx, model.json
    experiments export <run> --format torch_export --out deployed/                 # model.pt2 (torch.export.load)
    experiments export <run>/checkpoints/last.ckpt --format torchscript --out d/   # model.pt (torch.jit.load)
    experiments export <run> --out deployed/ data.root=/elsewhere/photos           # overrides, as for evaluate

The file holds the run's preprocessing (images: uint8 pixels in, normalised inside; texts: token ids in, the
vocabulary written beside it as vocabulary.json; tables: rows encoded as encoding.json beside it says), the net,
and the task's output: each class's probability (a softmax), or a regression's number in the label's unit, for
any batch size. The class names are in the file's metadata (ONNX: the model property
`experiments`; torch.export and TorchScript: the extra file `experiments.json`) and in model.json beside it, which
also says what the inputs must be. ONNX needs `pip install 'experiments[export]'`; ONNX Runtime runs the file:

    session = onnxruntime.InferenceSession("deployed/model.onnx")
    probabilities = session.run(None, {"images": images})[0]     # images: uint8 (N, C, H, W)
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from experiments.core.errors import PATH_ERRORS, UserError, exit_for

FORMATS = ("onnx", "torch_export", "torchscript")  # run/export.py's, named here for --help without importing torch


def export(path: Path, format: str, out: Path, overrides: list[str]) -> list[Path]:
    from experiments.run import export as exporting

    if format not in exporting.FORMATS:  # before the run is loaded
        raise UserError(f"--format {format!r} is not a format: choose {', '.join(exporting.FORMATS)}")
    try:
        return exporting.export(exporting.deployable(path, overrides), format, out)
    except OSError as error:  # a path of the user's: theirs to change
        if error.errno not in PATH_ERRORS:
            raise
        raise UserError(f"cannot write to {out}: {error.strerror or error}; give --out another folder") from error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="experiments export", description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("path", type=Path, help="a run directory (its best checkpoint) or a .ckpt file")
    parser.add_argument("overrides", nargs="*", help="changes to the run's config: key=value, or group=option")
    parser.add_argument("--format", default="onnx", help=f"{', '.join(FORMATS)} (default: onnx)")
    parser.add_argument("--out", type=Path, default=Path("exported"), help="the folder to write (default: exported)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's errors reach `describe` whole
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        files = export(args.path, args.format, args.out, args.overrides)
    except (Exception, KeyboardInterrupt) as error:
        exit_for(error)
    for file in files:
        print(f"exported       {file.resolve()}  ({file.stat().st_size / 1e6:,.1f} MB)")
