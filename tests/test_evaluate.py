"""`python -m experiments.evaluate`: a finished run's checkpoint tested again, with the run's config or another."""

from __future__ import annotations

import pytest

from experiments.commands.evaluate import evaluate, main
from tests.conftest import best_checkpoint, run_cli


@pytest.mark.slow  # the command line in a subprocess: the full tier
def test_evaluate_reproduces_the_runs_test_accuracy(finished_run, tmp_path):
    run_dir, metrics = finished_run
    result = run_cli(str(run_dir), cwd=tmp_path, module="experiments.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"test accuracy  {metrics['test']['test/acc']:.4f}" in result.stdout
    assert f"checkpoint     {best_checkpoint(run_dir)}" in result.stdout


def test_overrides_compose_values_and_whole_groups_on_the_runs_config(finished_run):
    from experiments.core.run_dir import RunDir
    from experiments.run.finished import run_config

    run = RunDir(finished_run[0])
    cfg = run_config(run, ["data.batch_size=7", "model.width=3"])
    assert cfg.data.batch_size == 7 and cfg.model.width == 3 and cfg.trainer.max_epochs == 2  # the run's own
    other = run_config(run, ["data=mnist", "data.data_dir=/elsewhere"])
    assert other.data._target_ == "experiments.data.MNISTDataModule" and other.data.data_dir == "/elsewhere"
    assert other.data.seed == cfg.seed and other.model.width == 256  # interpolations read the run's own values


def test_evaluate_takes_a_checkpoint_file_too(finished_run, capsys):
    run_dir, _ = finished_run
    last = run_dir / "checkpoints" / "last.ckpt"  # the model after the last epoch, not the best one
    main([str(last)])
    expected = evaluate(last, [])[0]  # in this process, as the same model and data: the same figures
    shown = capsys.readouterr().out
    assert f"checkpoint     {last}" in shown and f"test accuracy  {expected['test/acc']:.4f}" in shown


def test_evaluate_explains_a_wrong_path_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'nowhere'}: no such run directory or checkpoint  (EXPERIMENTS_DEBUG=1 shows the traceback)"
    )


def test_evaluate_refuses_a_damaged_checkpoint_in_one_line(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    damaged = run_dir / "checkpoints" / "damaged.ckpt"
    damaged.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:1000])  # a copy cut short
    with pytest.raises(SystemExit) as exit_:
        main([str(damaged)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {damaged} is not a readable checkpoint") and "\n" not in error
