"""Optuna searches through our sweeper (run/search.py): what a user runs and what they get back."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_hydra_imports_the_plugin_without_optuna_or_torch():
    # Hydra imports every hydra_plugins module at the start of every command, a search or not.
    code = "import sys, hydra_plugins.experiments_search; print(sorted({'optuna', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def one_line_exit_2(result: subprocess.CompletedProcess, *parts: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: ") and "Traceback" not in result.stdout + result.stderr
    assert all(part in line for part in parts), line
    return line


SEARCH = ("hparams_search=digits_mlp", "trainer.max_epochs=1", "logger=none")


@pytest.mark.parametrize(
    "storage, says",
    [
        ("nosuch://x", "hydra.sweeper.storage=nosuch://x: not a storage URL"),
        (
            "sqlite:////no/such/folder/study.db",
            "hydra.sweeper.storage=sqlite:////no/such/folder/study.db: cannot open it",
        ),
        (
            "postgresql://me:secret@127.0.0.1:1/db",
            "hydra.sweeper.storage=postgresql://me:***@127.0.0.1:1/db: cannot open it",
        ),
    ],
)
def test_a_storage_that_cannot_be_parsed_or_reached_is_one_line_and_leaves_no_sweep_folder(tmp_path, storage, says):
    line = one_line_exit_2(run_cli(*SEARCH, f"hydra.sweeper.storage={storage}", cwd=tmp_path), says)
    assert "secret" not in line  # the password is not shown
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs" / "train" / "multiruns").iterdir())


def study_in(path: Path, direction: str, space: dict | None = None):
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="digits_mlp", direction=direction)
    if space is not None:
        study.set_user_attr("search_space", space)
    return study


def test_a_study_of_the_same_name_in_the_other_direction_is_refused(tmp_path):
    study_in(tmp_path / "study.db", "minimize")
    result = run_cli(*SEARCH, f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}", cwd=tmp_path)
    one_line_exit_2(result, "study 'digits_mlp' in sqlite:///", "was made to minimize, not to maximize")


def test_a_study_of_the_same_name_over_another_space_is_refused(tmp_path):
    from experiments.run.search_space import search_space

    study_in(tmp_path / "study.db", "maximize", search_space({"model.width": "choice(8, 16)"}, []).as_json())
    result = run_cli(*SEARCH, f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}", cwd=tmp_path)
    one_line_exit_2(result, "searched another space (differing: data.batch_size, model.depth, model.dropout,")


def test_an_unknown_pruner_is_one_line(tmp_path):
    result = run_cli(*SEARCH, "hydra/sweeper/pruner=early", cwd=tmp_path)
    one_line_exit_2(result, "hydra/sweeper/pruner=early: no such option; choose from hyperband, median, none")
    # The key instead of the group replaces the pruner's settings with a word: said so, with the form that works.
    result = run_cli(*SEARCH, "hydra.sweeper.pruner=median", cwd=tmp_path)
    one_line_exit_2(result, "hydra.sweeper.pruner=median: choose a pruner with hydra/sweeper/pruner=median")


def test_resume_of_a_folder_that_is_not_a_sweep_is_one_line(tmp_path):
    (tmp_path / "some_folder").mkdir()
    result = run_cli(f"resume={tmp_path / 'some_folder'}", cwd=tmp_path)
    one_line_exit_2(result, "give a run directory, a .ckpt file or a sweep directory (one with multirun.yaml)")


def test_a_sweep_folder_another_process_runs_is_refused(tmp_path):
    from filelock import FileLock

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    with FileLock(sweep_dir / ".sweep.lock"):  # held by this process, as a running sweep holds it
        result = run_cli("-m", "model=mlp", "seed=0,1", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    one_line_exit_2(result, f"{sweep_dir} is being run by another process; wait for it to end, or stop it")
    assert [path.name for path in sweep_dir.iterdir()] == [".sweep.lock"]  # no job ran


@pytest.mark.slow
def test_a_pruner_that_prunes_stops_jobs_early_and_the_record_the_summary_and_the_study_agree(tmp_path):
    import optuna

    # A learning rate of 1e-6 leaves a trial near chance after its first epoch: below the median, stopped there.
    pruning = [
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "optimizer.lr=choice(0.01,1e-6)",
    ]
    sweep_dir = tmp_path / "search"
    args = ["hparams_search=digits_mlp", "hydra.sweeper.n_trials=6", "trainer.max_epochs=4", "logger=none"]
    result = run_cli(*args, *pruning, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    with open(sweep_dir / "summary.csv", newline="") as file:
        rows = {row["job"]: row for row in csv.DictReader(file)}
    states = {"completed": "COMPLETE", "pruned": "PRUNED"}
    assert {str(t.number): t.state.name for t in study.trials} == {job: states[r["status"]] for job, r in rows.items()}
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and all(t.params["optimizer.lr"] == 1e-6 for t in pruned)
    for trial in pruned:
        job = sweep_dir / str(trial.number)
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "pruned" and metrics["test"] == {}  # a pruned trial is not tested
        # It stopped after the validation that pruned it: the last epoch it reported is the last it trained.
        assert metrics["epochs"] == max(trial.intermediate_values) < 4
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (
            f"trial {trial.number} pruned after epoch {metrics['epochs']}: val/acc" in (job / "train.log").read_text()
        )
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())["epochs"] == 4 for t in completed)
    first = (sweep_dir / "summary.md").read_text().splitlines()[0]
    assert (
        first
        == f"6 jobs: {len(completed)} completed, {len(pruned)} pruned, 0 failed, 0 unfinished; ranked by val/acc (max)"
    )


@pytest.mark.slow
def test_jobs_in_joblibs_worker_processes_report_every_validation_to_their_trials(tmp_path):
    import optuna

    sweep_dir = tmp_path / "search"
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    args = ["hparams_search=digits_mlp", "hydra.sweeper.n_trials=2", "trainer.max_epochs=3", "logger=none", *parallel]
    result = run_cli(*args, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    for trial in study.trials:
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert sorted(trial.intermediate_values) == [1, 2, 3]  # one report per epoch, from the worker process
        assert trial.intermediate_values[3] == pytest.approx(metrics["val"]["val/acc"])  # the last epoch's
        assert trial.value == pytest.approx(metrics["objective"]["value"])


def test_a_jobs_pruner_is_built_with_the_jobs_own_settings():
    # In a job, Hydra's copy of its config holds `hydra` alone: `${trainer.max_epochs}` resolves beside the job's.
    from omegaconf import OmegaConf, open_dict
    from optuna.pruners import HyperbandPruner

    from experiments.core.config import compose
    from experiments.run.trial import pruner

    cfg = compose(["hparams_search=digits_mlp", "hydra/sweeper/pruner=hyperband", "trainer.max_epochs=7"], True)
    node = OmegaConf.masked_copy(cfg, "hydra").hydra.sweeper.pruner  # as HydraConfig keeps it in a job
    with open_dict(cfg):
        del cfg["hydra"]
    built = pruner(cfg, node)
    assert isinstance(built, HyperbandPruner) and built._max_resource == 7 and built._min_resource == 1
