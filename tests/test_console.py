"""The console: Rich's live progress bars on a terminal (a pseudo-terminal here), plain epoch lines elsewhere."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess runs of the whole CLI: the full tier


def test_a_terminal_gets_rich_progress_bars_instead_of_plain_epoch_lines(tmp_path: Path):
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "experiments", "model=mlp", "trainer.max_epochs=2", "logger=none"]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    process = subprocess.Popen(command, cwd=tmp_path, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, output.decode(errors="replace")[-3000:]
    text = output.decode(errors="replace")
    assert "Epoch 1/1" in text and "━" in text  # Rich's bar: its epoch counter counts from 0
    assert "\x1b[" in text  # drawn with terminal control sequences
    assert "epoch 1/2  train/loss" not in text  # the plain lines are for logs, not terminals
    assert "test accuracy" in text
