"""Files written whole or not at all: checkpoints, metrics.json, sweep summaries, data caches, predictions.

The bottom layer: it imports nothing of this package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_atomically(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside `destination`, renamed onto it only when the block completes and the
    file is on the disk: after a crash of the run or of the whole machine (a power cut), `destination` is
    the old file or the new one, whole. Without the sync, the rename may be kept and the data not."""
    temporary = destination.with_name(destination.name + ".part")
    try:
        yield temporary
        with open(temporary, "r+b") as file:
            os.fsync(file.fileno())
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)
