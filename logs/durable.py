"""Durable-write helpers shared by the JSONL logs (`logs.querylog`, `logs.clicklog`).

`models.registry` keeps its own copy: models/ imports no other Sift package.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a file's creation (its directory entry) durable: an fsynced file in an unsynced directory can vanish
    in a crash of the machine."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
