"""Derived data kept on disk under a name made from the settings that shaped it, so other settings never reuse it."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import torch

from experiments.core.atomic import written_atomically

log = logging.getLogger(__name__)


class SettingsCache:
    """`folder/<prefix>-<sha1 of settings>.pt`: a dict of tensors, strings and numbers, stored with its settings.

    A cache is derived data, so a file that cannot be read or was built with other settings is built
    again, never used and never a reason to stop. The file is written whole or not at all.
    """

    def __init__(self, folder: Path, prefix: str, settings: dict) -> None:
        self.settings = settings
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.path = folder / f"{prefix}-{key}.pt"

    def read(self) -> dict | None:
        """The stored contents (with their "settings"), or None, with a warning, when they cannot be used."""
        try:
            cache = torch.load(self.path, weights_only=True)  # tensors, strings and numbers only: no code runs
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
            log.warning("%s is unreadable (%s); building it again", self.path, str(error).splitlines()[0])
            return None
        if not isinstance(cache, dict) or cache.get("settings") != self.settings:
            log.warning("%s was built with other settings; building it again", self.path)
            return None
        return cache

    def write(self, contents: dict) -> dict:
        """Store `contents` with the settings; returns them as `read` will: `cache.read() or cache.write(build())`."""
        stored = {"settings": self.settings, **contents}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(self.path) as temporary:
            torch.save(stored, temporary)
        return stored
