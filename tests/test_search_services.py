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


def test_two_workers_pull_trials_from_one_study_in_postgresql(tmp_path, postgres):
    import optuna

    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments", *TINY, "hydra.sweeper.n_trials=6", "hydra.sweeper.study_name=shared",
             f"hydra.sweeper.storage='{postgres}'", f"hydra.sweep.dir={tmp_path / f'worker{i}'}"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ},
        )
        for i in range(2)
    ]  # fmt: skip
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]

    study = optuna.load_study(study_name="shared", storage=postgres)
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


def test_optuna_dashboard_serves_a_searchs_study_db(tmp_path):
    sweep_dir = tmp_path / "search"
    result = run_cli(*TINY, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

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
