"""Checkpoints that survive a kill: atomic writes (temporary file, fsync, rename), old files removed only after the
new one is in place, interval saves at most every ``min_seconds`` (a 360 MB vit_b teacher saved after every 3-step
epoch spent more time writing than training), and the newest interval checkpoint to resume from."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Mapping

from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from ..utils.io import atomic_write, write_json


class _AtomicDiskSaver(DiskSaver):
    """ignite's DiskSaver writing a temporary file, flushed to disk (fsync), then renamed onto the target;
    optionally always one fixed file name, which a new save replaces in place instead of deleting it first."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        with atomic_write(path, fsync=True) as tmp, open(tmp, "wb") as f:
            func(checkpoint, f, **self.kwargs)

    def remove(self, filename: str) -> None:
        if self.filename is None:  # a fixed name is replaced by the next save: never left missing
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` that never leaves fewer good files than before: every file is written to a
    temporary file, fsynced and renamed; interval checkpoints beyond the ``n_saved`` newest are removed only after
    the new one is in place, and ``model.pt`` is replaced in place. Temporary files of a killed run (older than
    :attr:`STALE_AFTER_S`) are removed when the saver is attached.

    ``save_engine_as`` also saves the engine it is attached to under that key (e.g. ``"trainer"``, for resuming),
    which a bundle config cannot reference without a circular reference. ``min_seconds`` skips an interval save
    until that long after the previous one (a kill then loses at most that much work); the last epoch and a
    terminating engine (early stopping) are always saved.

    With a fixed ``key_metric_filename`` (``model.pt``) the best score is kept beside it (``model.pt.best.json``)
    and restored when the saver is attached again, so that after a kill or a resumed run ``model.pt`` is replaced
    only by a better model than the best of every earlier run in that folder.
    """

    STALE_AFTER_S = 60.0  # a temporary file older than this when the saver is attached was left by a killed run

    def __init__(self, save_dir: str, save_dict: dict, save_engine_as: str | None = None, min_seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        self.save_engine_as = save_engine_as
        self.min_seconds = min_seconds
        self._last_save = time.monotonic()
        name = kwargs.get("key_metric_filename")
        self.best_model = Path(save_dir) / name if name and self._key_metric_checkpoint is not None else None
        self.best_file = self.best_model.with_name(f"{name}.best.json") if self.best_model else None
        self.keep = kwargs.get("n_saved", 1)
        for ckpt, name in (
            (self._final_checkpoint, kwargs.get("final_filename")),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, None),
        ):
            if ckpt is not None:
                ckpt.save_handler = _AtomicDiskSaver(save_dir, name)
        if self._interval_checkpoint is not None:
            self._interval_checkpoint.n_saved = None  # ignite would delete the oldest before writing; _prune does it after

    def attach(self, engine: Engine) -> None:
        if self.save_engine_as:
            self.save_dict[self.save_engine_as] = engine  # the Checkpoint objects share this dict
        folder = Path(self.save_dir)
        for stale in [*folder.glob(".*.tmp"), *folder.glob("tmp*")] if folder.is_dir() else []:
            # left by a process killed while writing; a fresh one is another process's write in progress (under DDP,
            # every rank writes resume_signature.json here while rank 0 attaches this saver)
            if stale.is_file() and time.time() - stale.stat().st_mtime > self.STALE_AFTER_S:
                stale.unlink(missing_ok=True)
        super().attach(engine)
        if self.best_file is not None and self.best_file.is_file() and self.best_model.is_file():
            self._key_metric_checkpoint.load_state_dict(json.loads(self.best_file.read_text()))  # the best of earlier runs
        if self._interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self._prune)

    def interval_completed(self, engine: Engine) -> None:
        last = engine.state.epoch >= (engine.state.max_epochs or 0) or engine.should_terminate
        if self.min_seconds and not last and time.monotonic() - self._last_save < self.min_seconds:
            return
        super().interval_completed(engine)
        self._last_save = time.monotonic()

    def metrics_completed(self, engine: Engine) -> None:
        before = list(self._key_metric_checkpoint._saved)
        super().metrics_completed(engine)
        if self.best_file is not None and self._key_metric_checkpoint._saved != before:
            write_json(self.best_file, self._key_metric_checkpoint.state_dict())

    def _prune(self, engine: Engine) -> None:
        """Keep the ``n_saved`` newest interval checkpoints (of this run and earlier, resumed ones); runs after the
        new checkpoint is written."""
        prefix = self._interval_checkpoint.filename_prefix or "checkpoint"
        pattern = re.compile(rf"{re.escape(prefix)}_(?:epoch|iteration)=(\d+)\.pt$")
        found = sorted((int(m.group(1)), p) for p in Path(self.save_dir).glob(f"{prefix}_*.pt") if (m := pattern.search(p.name)))
        for _, path in found[: max(len(found) - (self.keep or len(found)), 0)]:
            path.unlink(missing_ok=True)


def latest_checkpoint(ckpt_dir: str | Path, prefix: str = "checkpoint") -> Path | None:
    """The interval checkpoint with the highest epoch in ``ckpt_dir`` (``<prefix>_epoch=<n>.pt``), if any."""
    pattern = re.compile(rf"{re.escape(prefix)}_epoch=(\d+)\.pt$")
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).glob(f"{prefix}_epoch=*.pt") if (m := pattern.search(p.name))]
    return max(found)[1] if found else None
