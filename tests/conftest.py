"""Shared fixtures: real datasets from ../shared/data (or the in-repo HC18 sample) and bad-input copies of them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TSKD_DATA_DIR", REPO.parent / "shared" / "data"))
SAMPLE = REPO / "sample_data" / "hc18"


def real_dataset(name: str) -> Path:
    """A dataset folder from ../shared/data; HC18 falls back to the in-repo sample; others skip when absent."""
    path = SHARED_DATA / name
    if (path / "dataset.json").is_file():
        return path
    if name == "hc18":
        return SAMPLE
    pytest.skip(f"dataset {name} not found under {SHARED_DATA} (set TSKD_DATA_DIR)")


@pytest.fixture
def hc18() -> Path:
    return real_dataset("hc18")


@pytest.fixture
def sample_dataset() -> Path:
    return SAMPLE


@pytest.fixture
def small_copy(tmp_path: Path):
    """Copy ``n`` ids per split of a real dataset into tmp_path, to be edited by bad-input tests."""

    def make(source: Path, n: int = 4) -> Path:
        dst = tmp_path / source.name
        split = json.loads((source / "split.json").read_text())
        small = {k: v[:n] for k, v in split.items()}
        for sub in ("images", "masks"):
            (dst / sub).mkdir(parents=True)
            for ids in small.values():
                for i in ids:
                    for f in (source / sub).glob(f"{i}.*"):
                        shutil.copy(f, dst / sub / f.name)
        (dst / "split.json").write_text(json.dumps(small))
        shutil.copy(source / "dataset.json", dst / "dataset.json")
        return dst

    return make


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain (MONAI's Compose wraps transform errors in RuntimeError)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err
