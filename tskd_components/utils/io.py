"""Atomic file writes: a temporary file in the target's folder, renamed onto the target once complete."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def atomic_path(path: str | Path) -> Path:
    """A temporary file in the target's folder; rename it onto ``path`` once written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def new_file_mode() -> int:
    """The permission bits ``open(path, "w")`` gives a new file under the process's umask (``mkstemp``'s temporary
    files are owner-only, 0600). Linux reports the umask in ``/proc/self/status``; reading it there avoids setting
    it, which would briefly change it for every thread of the process."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        umask = int(fields["Umask"].strip(), 8)
    except (OSError, KeyError, ValueError):  # not Linux, or a kernel before 4.7
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder to write; when the block ends without an error, it takes the
    permissions a plain new file would (:func:`new_file_mode`), is flushed to disk with ``fsync``, and is renamed
    onto ``path``: a reader sees the old file or the new one, never half of it. On an error ``path`` is untouched
    and the temporary file removed."""
    tmp = atomic_path(path)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, payload: Any, indent: int = 1, sort_keys: bool = False) -> Path:
    """Write ``payload`` as JSON atomically (:func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent, default=str, sort_keys=sort_keys))
    return Path(path)
