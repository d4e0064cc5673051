"""What ``tskd`` shows while it works: one line per stage (name, seconds, key metric) and a progress line per
result cell; each stage's own output (MONAI logs, progress bars) goes to ``<stage folder>/stage.log``. ``--verbose``
(or ``TSKD_VERBOSE=1``) streams everything to the terminal instead."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STAGE_LOG = "stage.log"
_state = {"verbose": os.environ.get("TSKD_VERBOSE", "") not in ("", "0")}


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = verbose


def is_verbose() -> bool:
    return _state["verbose"]


@contextmanager
def stage_output(log: Path) -> Iterator[None]:
    """Send everything written to the process's stdout and stderr (file descriptors 1 and 2, so also logging handlers,
    tqdm bars and data-loader workers) to ``log`` (appended), unless verbose."""
    if is_verbose():
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush(), sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(saved[0]), os.close(saved[1])


def progress(done: int, total: int, text: str, width: int = 20) -> str:
    """``[████████░░░░] 4/10 cells  text``."""
    filled = round(width * done / max(total, 1))
    return f"[{'█' * filled}{'░' * (width - filled)}] {done}/{total} cells  {text}"
