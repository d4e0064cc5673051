"""The pool of datasets a foundation stand-in is pre-trained on: every dataset under the data root except the
targets, never a target, and per image the class-agnostic object masks SAM-style pre-training prompts for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.dataset import DatasetError, load_datalist, read_dataset_info, read_split

POOL_SPLITS = ("train",)
HELD_OUT_SPLITS = ("val", "test")


def resolve_pool(data_root: str | Path, targets: Sequence[str], pool: Sequence[str] | None = None) -> list[Path]:
    """Dataset folders of the pool: ``pool`` (names under ``data_root``) or every dataset there except ``targets``.

    A target named in the pool is refused: a stand-in must never have seen the task it is evaluated on."""
    root = Path(data_root)
    targets = [Path(t).name for t in targets]
    names = list(pool) if pool else sorted(p.name for p in root.iterdir() if (p / "dataset.json").is_file() and p.name not in targets)
    leaked = sorted(set(names) & set(targets))
    if leaked:
        raise DatasetError(f"target dataset(s) {leaked} are in the pre-training pool {names}; a foundation stand-in must not "
                           "see its targets: drop them from --pool")
    if not names:
        raise DatasetError(f"no pool datasets under {root} besides the targets {targets}")
    folders = [root / n for n in names]
    for folder in folders:
        read_dataset_info(folder)  # clear error for a folder that is not a dataset
    return folders


def pool_datalist(folders: Sequence[Path], splits: Sequence[str] = POOL_SPLITS) -> list[dict[str, Any]]:
    """Items of ``splits`` of every pool dataset, each tagged with its dataset and class count."""
    items = []
    for folder in folders:
        info = read_dataset_info(folder)
        for split in splits:
            if not read_split(folder).get(split):  # e.g. a pool dataset without a val split
                continue
            for item in load_datalist(folder, split):
                items.append({**item, "dataset": info.name, "num_classes": info.num_classes})
    return items


def balanced_sampler(items: Sequence[dict[str, Any]], seed: int = 0) -> torch.utils.data.WeightedRandomSampler:
    """Draws each pool dataset equally often (with replacement, one epoch = ``len(items)`` draws), so that the
    largest dataset (kvasir_seg: 210 of 237 training images) does not decide what the stand-in learns; SAM's data
    engine balances its sources the same way."""
    counts = Counter(item["dataset"] for item in items)
    weights = torch.tensor([1.0 / counts[item["dataset"]] for item in items], dtype=torch.double)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(items), replacement=True,
                                                  generator=torch.Generator().manual_seed(seed))


def resolve_targets(data_root: str | Path, targets: Sequence[str]) -> list[Path]:
    """Dataset folders of the targets (names under ``data_root``, or folders), each checked to be a dataset."""
    folders = [Path(t) if Path(t).is_dir() else Path(data_root) / t for t in targets]
    for folder in folders:
        read_dataset_info(folder)
    return folders
