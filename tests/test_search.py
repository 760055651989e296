"""Optuna searches through our sweeper (run/search.py): what a user runs and what they get back."""

from __future__ import annotations

import subprocess
import sys


def test_hydra_imports_the_plugin_without_optuna_or_torch():
    # Hydra imports every hydra_plugins module at the start of every command, a search or not.
    code = "import sys, hydra_plugins.experiments_search; print(sorted({'optuna', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
