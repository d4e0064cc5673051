"""Promptable Dice of a stand-in: every object (class present in a mask) of every image, prompted by its exact
bounding box, decoded by SAM's single-mask output and compared with the mask at the model's input size."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from segment_anything.modeling import Sam

from ..data.dataset import load_datalist
from ..utils.io import write_json
from .model import prompt_masks
from .pool import HELD_OUT_SPLITS, pool_datalist
from .prompts import mask_box


@torch.no_grad()
def box_prompt_dice(sam: Sam, items: Sequence[dict[str, Any]], transform: Callable, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Mean box-prompted Dice per dataset (``item["dataset"]``) and over all objects; ``transform`` gives
    ``image`` (3, S, S) and ``label`` (1, S, S) as the model sees them."""
    sam = sam.to(device).eval()
    scores: dict[str, list[float]] = defaultdict(list)
    for item in items:
        data = transform(dict(item))
        embedding = sam.image_encoder(torch.as_tensor(data["image"])[None].to(device))
        label = torch.as_tensor(data["label"])[0].long().to(device)
        for c in [c for c in label.unique().tolist() if c > 0]:
            target = label == c
            logits, _ = prompt_masks(sam, embedding, box=mask_box(target))
            pred = logits[0] > 0
            scores[item.get("dataset", "all")].append(float(2 * (pred & target).sum() / (pred.sum() + target.sum())))
    per_dataset = {name: {"dice": sum(v) / len(v), "objects": len(v)} for name, v in sorted(scores.items())}
    everything = [s for v in scores.values() for s in v]
    return {"per_dataset": per_dataset, "mean_dice": sum(everything) / len(everything) if everything else None, "objects": len(everything)}


def standin_report(sam: Sam, pool_dirs: Sequence[Path], target_dirs: Sequence[Path], transform: Callable, path: str | Path,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Box-prompted Dice on the pool's held-out images (val + test splits, never trained on) and zero-shot on each
    target's test split; written to ``path`` as JSON."""
    zero_shot = [{**it, "dataset": Path(t).name} for t in target_dirs for it in load_datalist(t, "test")]
    report = {"prompt": "exact bounding box of each object, single-mask output, Dice at the model's input size",
              "held_out_pool": box_prompt_dice(sam, pool_datalist(pool_dirs, HELD_OUT_SPLITS), transform, device),
              "zero_shot_targets": box_prompt_dice(sam, zero_shot, transform, device)}
    write_json(path, report)
    return report
