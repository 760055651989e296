"""docs/extending.md's logger of your own, as written there: its files taken from the page, trained with through
the command line, and what it received read back."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from tests.conftest import REPO, run_cli

SHORT = ("model=mlp", "trainer.max_epochs=2", "trainer.accelerator=cpu")


def section(title: str) -> str:
    page = (REPO / "docs" / "extending.md").read_text()
    return page.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_the_documented_logger_keeps_the_figures_and_gets_the_params_and_curves(tmp_path):
    text = section("A logger")
    files = re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", text, flags=re.S)
    assert [path for path, _ in files] == ["my_project/loggers.py", "my_conf/logger/csv_figures.yaml"]
    for path, body in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    (command,) = re.findall(r"```bash\n(python -m experiments .*)\n```", text)
    result = run_cli(*command.split()[3:], *SHORT, cwd=tmp_path)  # the package imports from the current folder
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    figures = sorted(path.name for path in (run_dir / "csv" / "figures").iterdir())
    assert figures == [
        "test_confusion_matrix_step40.png",
        "test_misclassified_step40.png",
        "val_confusion_matrix_step40.png",
        "val_misclassified_step40.png",
    ]
    for name in figures:
        with Image.open(run_dir / "csv" / "figures" / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    params = (run_dir / "csv" / "hparams.yaml").read_text()
    assert "model.width: 256" in params and "trainer.max_epochs: 2" in params  # RunLogger's default log_config
    assert "val/acc" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
