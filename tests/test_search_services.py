"""A search's study where other programs reach it: two worker processes pulling trials from one study in a real
PostgreSQL server (pgserver's, started by the fixture), and optuna-dashboard answering over HTTP on a study.db."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # whole searches, a database server, a web server

TINY = ["hparams_search=digits_mlp", "trainer.max_epochs=2", "logger=none"]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own on a Unix socket (nothing on the network), as a SQLAlchemy URL."""
    import pgserver  # it bundles PostgreSQL, which starts as root too (the system's refuses to)

    folder = tempfile.mkdtemp(prefix="pg")  # short: a Unix socket's path has a length limit
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_two_workers_pull_trials_from_one_study(tmp_path, database, request):
    import optuna

    # Both start on an empty database: each creates its tables, and the one that loses the race tries again.
    storage = request.getfixturevalue("postgres") if database == "postgresql" else f"sqlite:///{tmp_path}/study.db"

    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments", *TINY, "hydra.sweeper.n_trials=6", "hydra.sweeper.study_name=shared",
             f"hydra.sweeper.storage='{storage}'", f"hydra.sweep.dir={tmp_path / f'worker{i}'}"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ},
        )
        for i in range(2)
    ]  # fmt: skip
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = sorted(t.number for t in study.trials)
    assert 6 <= len(numbers) <= 7 and all(t.state.name == "COMPLETE" for t in study.trials)  # 7: both asked last
    ran = [{p.parent.name for p in (tmp_path / f"worker{i}").glob("*/metrics.json")} for i in range(2)]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # each pulled trials as it went; none ran twice
    assert sorted(int(n) for n in ran[0] | ran[1]) == numbers  # a trial's folder is named by its number
    for trial in study.trials:
        worker = next(i for i in range(2) if str(trial.number) in ran[i])
        metrics = json.loads((tmp_path / f"worker{worker}" / str(trial.number) / "metrics.json").read_text())
        assert metrics["objective"]["value"] == pytest.approx(trial.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hparams(run: Path) -> dict:
    """What TensorBoard's HParams table shows for a run: its session's hyperparameters."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {
        key: value.number_value if value.HasField("number_value") else value.string_value
        for key, value in values.items()
    }


def test_optuna_dashboard_and_tensorboard_show_every_trial_of_a_search(tmp_path):
    import optuna

    sweep_dir = tmp_path / "search"
    search = ["hparams_search=digits_mlp", "trainer.max_epochs=2", "hydra.sweeper.n_trials=2"]  # TensorBoard on
    result = run_cli(*search, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="digits_mlp", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    for trial in study.trials:  # each trial's own row in the HParams table, with the values it was given
        shown = hparams(sweep_dir / str(trial.number) / "tensorboard")
        assert {key: shown[key] for key in trial.params} == pytest.approx(trial.params)

    port = free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"  # its console script: it has no __main__
    command = [sys.executable, str(dashboard), f"sqlite:///{sweep_dir / 'study.db'}", "--host", "127.0.0.1"]
    server = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        (study,) = studies
        assert study["study_name"] == "digits_mlp"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as response:
            trials = json.loads(response.read())["trials"]
        assert [(t["number"], t["state"]) for t in trials] == [(0, "Complete"), (1, "Complete")]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_trial_whose_worker_is_killed_is_taken_up_by_another_worker_from_its_last_checkpoint(tmp_path, postgres):
    import optuna
    import yaml

    from tests.test_sweep_resume import SHORT_JOBS, finished, kill_when, start_cli

    study_name, first, second = "handover", tmp_path / "first", tmp_path / "second"
    common = [
        "hparams_search=digits_mlp",
        *SHORT_JOBS,
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.study_name={study_name}",
        f"hydra.sweeper.storage='{postgres}'",
        "hydra.sweeper.heartbeat_interval=1",  # a worker silent for 2 s has stopped
        "hydra.sweeper.grace_period=2",
    ]
    worker = start_cli(*common, f"hydra.sweep.dir={first}", cwd=tmp_path)

    def mid_trial() -> bool:
        return any(not (p.parents[1] / "metrics.json").exists() for p in first.glob("*/checkpoints/last.ckpt"))

    kill_when(worker, mid_trial)  # kill -9 of the worker and its jobs, in the middle of a trial
    (dead,) = [
        p.parents[1].name for p in first.glob("*/checkpoints/last.ckpt") if p.parents[1].name not in finished(first)
    ]
    result = run_cli(*common, f"hydra.sweep.dir={second}", cwd=tmp_path)  # starts after the grace period has passed
    assert result.returncode == 0, result.stderr[-3000:]

    study = optuna.load_study(study_name=study_name, storage=postgres)
    states = {t.number: t.state.name for t in study.trials}
    assert states[int(dead)] == "FAIL" and list(states.values()).count("FAIL") == 1
    assert list(states.values()).count("COMPLETE") == 4  # n_trials, the dead one not counted
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == int(dead)]
    assert retry.state.name == "COMPLETE" and retry.params == study.trials[int(dead)].params
    job = second / str(retry.number)
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    assert f"resume={first / dead / 'checkpoints' / 'last.ckpt'}" in overrides  # it went on from the dead one's
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["global_steps"] == 100
    assert metrics["objective"]["value"] == pytest.approx(retry.value)
