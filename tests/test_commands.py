"""One dispatcher for every command: `experiments [COMMAND] ...`, train by default; the commands of
src/experiments/commands/ and those an installed package adds through the `experiments.commands` entry points
(docs/extending.md's worked example, examples/custom/my_project/leaderboard.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from experiments.commands import commands, own_commands
from tests.conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom"
EARLIER_RUN = Path(__file__).parent / "files" / "run_before_the_layout"


def test_every_module_of_the_folder_is_a_command():
    assert set(own_commands()) == {"train", "evaluate", "export", "predict"}
    assert own_commands().items() <= commands().items()


def test_help_lists_the_commands_then_trains_config_groups(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    commands_block, _, hydra_help = result.stdout.partition("\n\n")
    assert commands_block.splitlines()[1:] == [
        "  evaluate   Test a trained model again: the run's own config, data and checkpoint.",
        "  export     Write a trained run as a file that serves without this package: ONNX, torch.export or "
        "TorchScript.",
        "  predict    Predict the classes or numbers of new inputs with a trained run, into a CSV file.",
        "  train      Train a model, or sweep many (the default command): the task of run/task.py, through Hydra's "
        "command line.",
    ]
    assert "model: cnn, mlp, rnn, speedrun, torchvision" in hydra_help


def test_train_named_or_not_is_the_same_command(tmp_path):
    named = run_cli("train", "model=mlp", "--cfg", "job", cwd=tmp_path)
    default = run_cli("model=mlp", "--cfg", "job", cwd=tmp_path)
    assert named.returncode == default.returncode == 0, named.stderr + default.stderr
    assert named.stdout == default.stdout and "_target_: experiments.models.nets.MLP" in named.stdout


def test_an_unknown_command_is_one_line_and_writes_nothing(tmp_path):
    result = run_cli("trian", "model=mlp", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no command 'trian'; choose from evaluate, export, predict, train (or give train's overrides)"
        "  (EXPERIMENTS_DEBUG=1 shows the traceback)"
    ]
    assert not (tmp_path / "outputs").exists()


def test_a_command_of_an_installed_package_runs_as_the_docs_show(tmp_path):
    # What `pip install -e .` of a package declaring the entry point leaves: its metadata on the path.
    site = tmp_path / "site"
    metadata = site / "my_project-0.1.dist-info"
    metadata.mkdir(parents=True)
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: my-project\nVersion: 0.1\n")
    (metadata / "entry_points.txt").write_text("[experiments.commands]\nleaderboard = my_project.leaderboard\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])}

    listed = run_cli("--help", cwd=tmp_path, env=env)
    assert "  leaderboard Rank finished runs by their test accuracy: `experiments leaderboard outputs/`." in (
        listed.stdout
    )
    shutil.copytree(EARLIER_RUN, tmp_path / "outputs" / "run")
    ranked = run_cli("leaderboard", "outputs", cwd=tmp_path, env=env)
    assert ranked.returncode == 0, ranked.stderr
    assert ranked.stdout == f"0.5593  {Path('outputs') / 'run'}\n"


def test_the_docs_show_the_example_command_as_it_is():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    section = docs.split("## A command", 1)[1]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown == (EXAMPLE / "my_project" / "leaderboard.py").read_text()
