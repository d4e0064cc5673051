"""Atomic file writes: a temporary file in the target's folder, renamed onto the target once complete."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_path(path: str | Path) -> Path:
    """A temporary file in the target's folder; rename it onto ``path`` once written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def write_json(path: str | Path, payload: Any, indent: int = 1, sort_keys: bool = False) -> Path:
    """Write ``payload`` as JSON atomically: a reader sees the old file or the new one, never half of it."""
    tmp = atomic_path(path)
    try:
        tmp.write_text(json.dumps(payload, indent=indent, default=str, sort_keys=sort_keys))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(path)
