"""The promptable SAM a foundation stand-in is: segment-anything's ``Sam`` in a registered shape, trained from box
and point prompts, and saved with the official state-dict keys (``--sam-checkpoint`` takes it like
``sam_vit_b_01ec64.pth``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from ..networks.sam import build_sam_parts, sam_spec
from ..utils.io import atomic_write, write_json
from ..utils.weights import file_digest

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
CHECKPOINT_FILE = "standin.pth"
RECORD_FILE = "standin.json"


def build_promptable_sam(variant: str = "standin", image_size: int = 128) -> Sam:
    """segment-anything's ``Sam`` (image encoder, prompt encoder, mask decoder with SAM's 4 mask tokens) in the shape
    of the registered ``variant``; inputs are ImageNet-normalised RGB images of ``image_size`` px."""
    image_encoder, prompt_encoder, mask_decoder = build_sam_parts(sam_spec(variant), image_size, num_mask_tokens=4)
    return Sam(image_encoder, prompt_encoder, mask_decoder, pixel_mean=list(IMAGENET_MEAN_255), pixel_std=list(IMAGENET_STD_255))


def prompt_masks(sam: Sam, embedding: torch.Tensor, box: torch.Tensor | None = None,
                 point: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one image's (1, C, h, w) ``embedding`` for one prompt: a box (4,) as SAM's single-mask output (token
    0), or a positive point (2,) as its three ambiguity-aware outputs (tokens 1-3). Returns logits (K, S, S) at the
    input size and predicted IoUs (K,), K = 1 or 3."""
    points = (point.view(1, 1, 2), torch.ones(1, 1, device=embedding.device)) if point is not None else None
    boxes = box.view(1, 4) if box is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=point is not None)
    size = sam.image_encoder.img_size
    return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)[0], iou[0]


def save_standin(sam: Sam, folder: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``standin.pth`` (the state dict, official SAM keys) atomically and ``standin.json`` beside it (pool,
    variant, image size, training and the checkpoint's SHA-256)."""
    folder = Path(folder)
    path = folder / CHECKPOINT_FILE
    # through a file object: torch.save names the archive inside after a path (here the random temp name), so
    # identical weights would get another SHA-256 on every save
    with atomic_write(path, fsync=True) as tmp, open(tmp, "wb") as f:
        torch.save(sam.state_dict(), f)
    write_json(folder / RECORD_FILE, {**record, "checkpoint": CHECKPOINT_FILE, "sha256": file_digest(path),
                                      "parameters": {"image_encoder": sum(p.numel() for p in sam.image_encoder.parameters()),
                                                     "total": sum(p.numel() for p in sam.parameters())}})
    return path


def read_standin_record(checkpoint: str | Path) -> dict[str, Any] | None:
    """The ``standin.json`` beside a stand-in checkpoint (``None`` for other checkpoints, e.g. official SAM)."""
    record = Path(checkpoint).parent / RECORD_FILE
    return json.loads(record.read_text()) if record.is_file() else None
