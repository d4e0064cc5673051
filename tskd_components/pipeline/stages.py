"""Stages of a TSKD run: one ``monai.bundle.run`` each, skipped when its outputs exist and its inputs did not change."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from monai.bundle import run

import tskd_components

from ..utils.run_record import package_versions
from .console import STAGE_LOG, is_verbose, stage_output
from ..utils.io import write_json
from ..utils.weights import file_digest

STAGE_RECORD = "stage.json"
STAGE_STARTED = "stage.started.json"  # the signature of a stage that began (and may have been interrupted)
# the bundles' resume checkpoints (model, optimizer, trainer state): they only serve an interrupted stage, so a finished
# stage drops them; its outputs are the exported weights and metrics (a changed stage is redone from scratch anyway)
RESUME_CHECKPOINTS = "checkpoint_epoch=*.pt"

# the config files of each kind of stage (later files overlay earlier ones): the one place the pipeline names them
BUNDLE_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "foundation": ("tskd_sam_lora", ("pretrain.json",)),
    "synthesis": ("tskd_synthesis", ("train.json",)),
    "synthesis_gpu": ("tskd_synthesis", ("train.json", "gpu.json")),
    "synthesis_report": ("tskd_synthesis", ("train.json", "report.json")),
    "transfer_set": ("tskd_synthesis", ("train.json", "build_transfer_set.json")),
    "mae": ("tskd_ssl_pretrain", ("train.json", "mae.json")),
    "mocov3": ("tskd_ssl_pretrain", ("train.json", "mocov3.json")),
    "teacher": ("tskd_sam_lora", ("train.json",)),
    "teacher_evaluation": ("tskd_sam_lora", ("train.json", "evaluate.json")),
    "ts_kd_cache": ("tskd_distill", ("train.json", "ts_kd.json", "build_cache.json")),
    "ta_kd_cache": ("tskd_distill", ("train.json", "ta_kd.json", "build_cache.json")),
    "ts_kd": ("tskd_distill", ("train.json", "ts_kd.json")),
    "ta_kd": ("tskd_distill", ("train.json", "ta_kd.json")),
    "finetune": ("tskd_student_segmentation", ("train.json",)),
    "finetune_evaluation": ("tskd_student_segmentation", ("train.json", "evaluate.json")),
}


def bundles_dir() -> Path:
    """The repository's ``bundles/`` folder (next to the installed ``tskd_components`` of an editable install)."""
    folder = Path(os.environ.get("TSKD_BUNDLES_DIR", Path(tskd_components.__file__).resolve().parents[1] / "bundles"))
    if not (folder / "tskd_student_segmentation" / "configs").is_dir():
        raise FileNotFoundError(f"TSKD bundles not found in {folder}; install the repository with `pip install -e .` "
                                "or set TSKD_BUNDLES_DIR to its bundles/ folder")
    return folder


_pinned: list[tempfile.TemporaryDirectory] = []


def pin_bundle_configs() -> Path:
    """Copy every bundle's ``configs/`` into a temporary folder that this process's stages read from then on (kept
    until the process exits), so that editing the repository's configs during a long run cannot change or break
    the stages that have not started yet (e.g. a config naming code this process imported in its older form)."""
    if not _pinned:
        copy = tempfile.TemporaryDirectory(prefix="tskd_bundles_")
        for configs in bundles_dir().glob("*/configs"):
            shutil.copytree(configs, Path(copy.name) / configs.parent.name / "configs")
        _pinned.append(copy)
    return Path(_pinned[0].name)


def configs_dir(name: str) -> Path:
    """``bundles/<name>/configs`` as this process reads it: the copy :func:`pin_bundle_configs` made, once pinned."""
    return (Path(_pinned[0].name) if _pinned else bundles_dir()) / name / "configs"


def run_bundle(name: str, configs: Sequence[str], **overrides: Any) -> None:
    """``monai.bundle.run`` of ``bundles/<name>/configs/<configs...>`` (later files overlay earlier ones), from
    :func:`configs_dir`."""
    folder = configs_dir(name)
    files = [str(folder / c) for c in configs]
    run(config_file=files if len(files) > 1 else files[0], meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"), **overrides)


# the student every bundle built before the student became a choice: stage signatures leave it out (whether named or
# relied on as the default), so the results of stages that built it stay valid whatever the bundles' default becomes
LEGACY_STUDENT = {"student_name": "vit_tiny", "decoder": "unetr"}


# training settings whose bundle default changed (task -> setting -> the default before): a stage's signature names
# such a setting only where its value, given or the bundle's default, differs from the old default, so stages run
# before the change stay done and stages relying on the new default are redone (tskd_synthesis 0.5.0: v-prediction)
LEGACY_DEFAULTS = {task: {"prediction_type": "epsilon", "snr_gamma": 0.0} for task in ("synthesis", "synthesis_gpu")}


def student_choice(student_name: str = "", decoder: str = "") -> dict[str, str]:
    """The student a stage builds: each choice given, else the student bundle's ``train.json`` default."""
    defaults = json.loads((configs_dir("tskd_student_segmentation") / "train.json").read_text())
    return {"student_name": student_name or defaults["student_name"], "decoder": decoder or defaults["decoder"]}


def student_overrides(student_name: str = "", decoder: str = "") -> dict[str, str]:
    """Overrides naming the student a stage builds: each choice given, and each bundle default that differs from
    :data:`LEGACY_STUDENT`, so that a changed default changes the signatures of the stages relying on it (their
    earlier results are then redone, not reused for another model)."""
    given = {"student_name": student_name, "decoder": decoder}
    return {k: v for k, v in student_choice(student_name, decoder).items() if given[k] or v != LEGACY_STUDENT[k]}


def input_digest(path: str | Path) -> str:
    """Identity of a stage input: a file's SHA-256; for a folder (a dataset, a teacher cache, a transfer set), of every
    file in it by relative path and content, so that editing one mask reruns the stages that read it. Hidden files
    (locks, stage records) are left out. Contents are hashed once per process and file version (size, mtime)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        parts = [f"{p.relative_to(path).as_posix()}:{_content_digest(p, p.stat().st_size, p.stat().st_mtime_ns)}" for p in files]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()
    raise FileNotFoundError(f"stage input {path} does not exist; run the stage that makes it first")


@functools.lru_cache(maxsize=None)
def _content_digest(path: Path, size: int, mtime_ns: int) -> str:
    return file_digest(path)


@contextmanager
def stage_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold ``.<folder>.lock`` beside ``folder`` while a process works in it (``flock``: the kernel releases the lock
    of a process that dies, so a killed run never leaves a stale lock). A second process waits, saying who holds it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            print(f"[wait] {name}: {f.read().strip() or 'another process'} is working in {folder}", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def earlier_attempts(started: Path, log: Path) -> list[dict[str, Any]]:
    """The attempts recorded in an interrupted stage's ``stage.started.json``. An attempt killed before it could write
    its time (SIGKILL, a session's end) is timed from its start to the last write of the stage log, marked
    ``"estimated"``; its CPU time stays unknown (``None``)."""
    data = json.loads(started.read_text())
    attempts = data.get("attempts") or [{"started": data["started"]}]  # records written before attempts were kept
    for attempt in attempts:
        if attempt.get("seconds") is None:
            begun = attempt.get("start_time") or time.mktime(time.strptime(attempt["started"], "%Y-%m-%dT%H:%M:%S"))
            ended = log.stat().st_mtime if log.is_file() else begun
            attempt.update(seconds=round(max(0.0, ended - begun), 1), cpu_seconds=None, estimated=True)
    return attempts


@dataclass
class Stage:
    """One bundle run writing into ``folder``.

    Args:
        kind: what the stage does, e.g. ``"teacher"`` or ``"fine-tune ts_kd"`` (groups stage times in reports).
        name: label in logs, e.g. ``"teacher hc18 n10 s0"``.
        folder: the stage's own folder (its ``bundle_root``); its ``stage.json`` records what it was run with.
        task: what the bundle run does, a key of ``BUNDLE_CONFIGS`` (bundle name and config files).
        overrides: config overrides (JSON-serialisable).
        inputs: files / folders made by earlier stages; their digests are part of the stage signature.
        outputs: paths that must exist for the stage to count as done.
        after: a task of ``BUNDLE_CONFIGS`` run after the bundle with the same overrides (e.g. the test evaluation).
    """

    kind: str
    name: str
    folder: Path
    task: str
    overrides: Mapping[str, Any]
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    after: str | None = None

    @property
    def bundle(self) -> str:
        return BUNDLE_CONFIGS[self.task][0]

    @property
    def configs(self) -> tuple[str, ...]:
        return BUNDLE_CONFIGS[self.task][1]

    def signature(self) -> str:
        # naming the legacy student is the same stage as relying on it when it was the default (one model, one signature)
        overrides = {k: v for k, v in self.overrides.items() if LEGACY_STUDENT.get(k) != v}
        if self.task in LEGACY_DEFAULTS:
            defaults: dict[str, Any] = {}
            for name in self.configs:
                defaults.update(json.loads((configs_dir(self.bundle) / name).read_text()))
            for key, old in LEGACY_DEFAULTS[self.task].items():
                value = type(old)(overrides.pop(key, defaults.get(key, old)))  # 5 and 5.0: one setting
                overrides.update({key: value} if value != old else {})
        spec = {"bundle": self.bundle, "configs": list(self.configs), "overrides": overrides,
                "inputs": {str(p): input_digest(p) for p in self.inputs}}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()

    def record(self) -> dict[str, Any] | None:
        path = self.folder / STAGE_RECORD
        return json.loads(path.read_text()) if path.is_file() else None

    def is_done(self, signature: str) -> bool:
        rec = self.record()
        return rec is not None and rec["signature"] == signature and all(Path(p).exists() for p in self.outputs)

    def key_metric(self) -> str:
        """``", test Dice 0.812"`` when the stage wrote test metrics, else ``""``."""
        for path in self.outputs:
            if Path(path).name == "metrics.json" and Path(path).is_file():
                dice = json.loads(Path(path).read_text())["metrics"]["mean_dice"]["mean"]
                return f", test Dice {dice:.3f}"
        return ""

    def run(self) -> float:
        """Run unless done; returns the stage's seconds (recorded ones when skipped). One process at a time works in
        the stage's folder; another waits for it and then skips (done) or resumes (interrupted)."""
        with stage_lock(self.folder, self.name):
            return self._run()

    def _run(self) -> float:
        signature = self.signature()
        if self.is_done(signature):
            print(f"[skip] {self.name}: done, inputs unchanged ({self.folder})", flush=True)
            return float(self.record()["seconds"])
        rec = self.record()
        started = self.folder / STAGE_STARTED
        begun = json.loads(started.read_text())["signature"] if rec is None and started.is_file() else None
        if (rec is not None and rec["signature"] != signature) or (begun is not None and begun != signature):
            print(f"[redo] {self.name}: inputs or settings changed, clearing {self.folder}", flush=True)
            shutil.rmtree(self.folder)
        # no record: a fresh stage, or one interrupted with these settings that the bundle resumes from its checkpoint
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / STAGE_LOG
        attempts = earlier_attempts(started, log) if begun == signature else []
        attempts.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "start_time": time.time()})
        note_attempts = lambda: write_json(started, {"signature": signature, "started": attempts[0]["started"], "attempts": attempts})
        note_attempts()
        print(f"[run ] {self.name}" + ("" if is_verbose() else f" (log: {log})"), flush=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            with stage_output(log):
                run_bundle(self.bundle, self.configs, bundle_root=str(self.folder), **self.overrides)
                if self.after is not None:
                    run_bundle(*BUNDLE_CONFIGS[self.after], bundle_root=str(self.folder), **self.overrides)
        except BaseException:
            attempts[-1].update(seconds=round(time.perf_counter() - start, 1), cpu_seconds=round(time.process_time() - cpu_start, 1))
            note_attempts()
            print(f"[fail] {self.name} after {attempts[-1]['seconds']:.0f} s; its output: {log}", flush=True)
            raise
        attempts[-1].update(seconds=round(time.perf_counter() - start, 1), cpu_seconds=round(time.process_time() - cpu_start, 1))
        # an interrupted stage's time is the sum of its attempts (a killed attempt's CPU time is unknown and left out)
        seconds = round(sum(a["seconds"] for a in attempts), 1)
        cpu_seconds = round(sum(a.get("cpu_seconds") or 0.0 for a in attempts), 1)
        missing = [str(p) for p in self.outputs if not Path(p).exists()]
        if missing:
            raise RuntimeError(f"stage {self.name} finished without writing {missing}; see {log}")
        write_json(self.folder / STAGE_RECORD, {"kind": self.kind, "name": self.name, "signature": signature, "seconds": seconds,
                                                "cpu_seconds": cpu_seconds, "attempts": attempts, "bundle": self.bundle,
                                                "configs": list(self.configs), "overrides": dict(self.overrides),
                                                "inputs": [str(p) for p in self.inputs], "versions": package_versions(),
                                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        for checkpoint in self.folder.rglob(RESUME_CHECKPOINTS):
            checkpoint.unlink()
        print(f"[done] {self.name} in {seconds} s{self.key_metric()}", flush=True)
        return seconds
