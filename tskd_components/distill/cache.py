"""The teacher a distillation run learns from, its identity, and the cache of its outputs on a transfer set.

The cache holds hidden states of chosen encoder blocks and segmentation logits, in sharded safetensors files with
an ``index.json``. Distillation reads targets from it instead of running the teacher every epoch; a cache built for
another teacher, layer list or image is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..networks import build_lora_sam, build_prompt_free_sam
from ..utils.io import write_json
from ..utils.weights import file_digest, open_safetensors, save_safetensors

INDEX = "index.json"


TEACHER_MODES = ("fine_tuned", "frozen")


def teacher_id(mode: str, variant: str, teacher_weights: str | Path | None = None, sam_checkpoint: str | Path | None = None,
               random_init: bool = False, seed: int = 0) -> str | None:
    """The id that ties a cache to its teacher: SHA-256 of the merged fine-tuned teacher (``fine_tuned``), of the
    SAM checkpoint (``frozen``), or the variant and seed of a random initialisation. ``None`` when the file is absent."""
    if mode == "fine_tuned":
        return f"sha256:{file_digest(teacher_weights)}" if teacher_weights and Path(teacher_weights).is_file() else None
    if random_init:
        return f"random-init:{variant}:seed{seed}"
    return f"sha256:{file_digest(sam_checkpoint)}" if sam_checkpoint and Path(sam_checkpoint).is_file() else None


def load_teacher(
    mode: str,
    variant: str,
    num_classes: int,
    image_size: int,
    teacher_weights: str | Path | None = None,
    sam_checkpoint: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> torch.nn.Module:
    """The teacher whose outputs a cache holds (its id: :func:`teacher_id` with the same arguments).

    ``fine_tuned``: the merged LoRA-SAM file written by the teacher's training.
    ``frozen``: the original SAM, not fine-tuned (task-agnostic KD), from ``sam_checkpoint`` or, with
    ``random_init``, a random initialisation drawn with ``seed``.
    """
    if mode == "fine_tuned":
        if not teacher_weights or not Path(teacher_weights).is_file():
            raise FileNotFoundError(f"fine-tuned teacher {teacher_weights or '(not set)'} not found; train the teacher bundle first "
                                    "(it writes models/teacher_merged.safetensors)")
        return build_lora_sam(variant, num_classes, image_size, random_init=True, weights=teacher_weights)
    if mode == "frozen":
        torch.manual_seed(seed)
        return build_prompt_free_sam(variant, num_classes, image_size, sam_checkpoint, random_init)
    raise ValueError(f"teacher mode must be one of {TEACHER_MODES}, got {mode!r}")


class StaleCacheError(ValueError):
    """The cache on disk does not match the teacher, layers or images of this run."""


class TeacherCacheWriter:
    """Collects per-image targets and writes them in shards of ``shard_size`` images."""

    def __init__(self, cache_dir: str | Path, teacher_id: str, layers: Sequence[int], dtype: str = "float16",
                 feature_pool: int = 1, logits_size: int | None = None, shard_size: int = 256, mode: str = "fine_tuned") -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # an older index must not describe shards this build overwrites: the cache is unreadable until close()
        (self.dir / INDEX).unlink(missing_ok=True)
        self.meta = {"teacher_id": teacher_id, "layers": list(layers), "dtype": dtype, "feature_pool": feature_pool,
                     "logits_size": logits_size, "mode": mode, "shards": [], "images": {}}
        self.dtype = getattr(torch, dtype)
        self.shard_size = shard_size
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_ids: list[str] = []

    def add(self, image_id: str, source: str, hidden: Sequence[torch.Tensor], logits: torch.Tensor | None) -> None:
        """Targets of one image: hidden states (C, h, w) per layer and logits (K, H, W) or ``None`` (features only)."""
        pool = self.meta["feature_pool"]
        for layer, h in zip(self.meta["layers"], hidden):
            h = F.avg_pool2d(h[None].float(), pool)[0] if pool > 1 else h
            self._pending[f"{image_id}/hidden_{layer}"] = h.to(self.dtype)
        if logits is not None:
            size = self.meta["logits_size"]
            if size and logits.shape[-1] != size:
                logits = F.interpolate(logits[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
            self._pending[f"{image_id}/logits"] = logits.to(self.dtype)
        self.meta["images"][image_id] = {"source": source, "sha256": file_digest(source), "shard": len(self.meta["shards"])}
        self._pending_ids.append(image_id)
        if len(self._pending_ids) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_ids:
            return
        name = f"shard_{len(self.meta['shards']):05d}.safetensors"
        save_safetensors(self._pending, self.dir / name, {"teacher_id": self.meta["teacher_id"]})
        self.meta["shards"].append(name)
        self._pending, self._pending_ids = {}, []

    def close(self) -> Path:
        """Write the last shard and the index (atomically); returns the index path."""
        self._flush()
        return write_json(self.dir / INDEX, self.meta)


class TeacherCache:
    """Read-only access to a cache; checks it against the expected teacher and layers on open."""

    def __init__(self, cache_dir: str | Path, teacher_id: str | None = None, layers: Sequence[int] | None = None,
                 image_size: int | None = None) -> None:
        self.dir = Path(cache_dir)
        index = self.dir / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"no teacher cache at {self.dir} ({INDEX} missing); build it with bundles/tskd_distill/configs/build_cache.json")
        self.meta: dict[str, Any] = json.loads(index.read_text())
        problems = []
        if teacher_id is not None and self.meta["teacher_id"] != teacher_id:
            problems.append(f"teacher {self.meta['teacher_id'][:12]} != expected {teacher_id[:12]}")
        if layers is not None and list(layers) != self.meta["layers"]:
            problems.append(f"layers {self.meta['layers']} != expected {list(layers)}")
        if image_size is not None and self.meta.get("image_size") != image_size:
            problems.append(f"built at {self.meta.get('image_size')} px, this run uses {image_size} px")
        if problems:
            raise StaleCacheError(f"teacher cache {self.dir} is stale: {'; '.join(problems)}; rebuild it with build_cache.json (or point cache_dir elsewhere)")
        self._handles: dict[int, Any] = {}

    @property
    def ids(self) -> list[str]:
        return list(self.meta["images"])

    @property
    def has_logits(self) -> bool:
        return self.meta["mode"] != "frozen"

    def verify_sources(self, items: Iterable[dict]) -> None:
        """Refuse images whose file content changed since the cache was built, or that it does not hold."""
        for item in items:
            entry = self.meta["images"].get(item["id"])
            if entry is None:
                raise StaleCacheError(f"image {item['image']} (id {item['id']}) is not in teacher cache {self.dir}; rebuild the cache for this transfer set")
            if entry["sha256"] != file_digest(item["image"]):
                raise StaleCacheError(f"image {item['image']} changed since teacher cache {self.dir} was built; rebuild the cache")

    def __getitem__(self, image_id: str) -> dict[str, Any]:
        entry = self.meta["images"][image_id]
        shard = entry["shard"]
        if shard not in self._handles:
            self._handles[shard] = open_safetensors(self.dir / self.meta["shards"][shard])
        f = self._handles[shard]
        out = {"hidden": [f.get_tensor(f"{image_id}/hidden_{layer}").float() for layer in self.meta["layers"]]}
        if self.has_logits:
            out["logits"] = f.get_tensor(f"{image_id}/logits").float()
        return out


@torch.no_grad()
def build_teacher_cache(
    teacher: torch.nn.Module,
    items: Sequence[dict],
    transform,
    cache_dir: str | Path,
    teacher_id: str,
    layers: Sequence[int],
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    mode: str = "fine_tuned",
    **writer_kwargs: Any,
) -> Path:
    """Run ``teacher.forward_with_hidden`` over ``items`` (preprocessed by ``transform``) and write the cache.

    ``mode="frozen"`` stores hidden states only (the original SAM has no task logits).
    """
    if mode not in TEACHER_MODES:
        raise ValueError(f"mode must be one of {TEACHER_MODES}, got {mode!r}")
    teacher = teacher.to(device).eval()
    writer = TeacherCacheWriter(cache_dir, teacher_id, layers, mode=mode, **writer_kwargs)
    for start in tqdm(range(0, len(items), batch_size), desc="teacher cache", unit="batch"):
        batch = items[start : start + batch_size]
        images = torch.stack([torch.as_tensor(transform(dict(it))["image"]) for it in batch]).to(device)
        writer.meta["image_size"] = int(images.shape[-1])
        logits, hidden = teacher.forward_with_hidden(images, layers)
        for i, it in enumerate(batch):
            writer.add(it["id"], it["image"], [h[i].cpu() for h in hidden], None if mode == "frozen" else logits[i].cpu())
    return writer.close()
