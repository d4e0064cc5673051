"""Loading and exporting student weights: full student, encoder-only, timm ViT or MAE checkpoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed

from ..utils.weights import read_state_dict, require_file, save_safetensors
from .decoders import DECODERS, create_decoder
from .student import ViTSegmenter

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_student_weights` did: loaded, missing, unexpected and shape-mismatched keys."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def missing_encoder(self) -> list[str]:
        return [k for k in self.missing if k.startswith("encoder.")]

    def summary(self) -> str:
        return (
            f"{self.path}: loaded {len(self.loaded)} tensors; missing {len(self.missing)} "
            f"(encoder {len(self.missing_encoder)}); unexpected {len(self.unexpected)}; shape-mismatched {len(self.mismatched)}"
            + (f"; missing encoder keys: {self.missing_encoder[:8]}" if self.missing_encoder else "")
            + (f"; unexpected: {self.unexpected[:8]}" if self.unexpected else "")
            + (f"; mismatched: {self.mismatched[:8]}" if self.mismatched else "")
            + (f"; ignored {len(self.ignored)} MAE pre-training keys" if self.ignored else "")
        )


MAE_PRETRAIN_ONLY = ("mask_token", "decoder_")


def _to_student_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a checkpoint to student keys; returns the mapped tensors and the keys deliberately ignored.

    Full student state dicts pass through. Bare ViT state dicts (timm, or the MAE repository's ``model`` dict)
    go under ``encoder.``; MAE's pre-training decoder (``decoder_*``, ``mask_token``) is ignored, and the
    ``fc_norm`` of MAE fine-tuned checkpoints (which drop ``norm``) becomes the encoder's ``norm``.
    """
    if any(k.startswith(("encoder.", "decoder.")) for k in state):
        return state, []
    ignored = sorted(k for k in state if k.startswith(MAE_PRETRAIN_ONLY))
    mapped = {}
    for key, value in state.items():
        if key in ignored:
            continue
        if key.startswith("fc_norm.") and f"norm.{key[8:]}" not in state:
            key = f"norm.{key[8:]}"
        mapped[f"encoder.{key}"] = value
    return mapped, ignored


def load_student_weights(model: ViTSegmenter, path: str | Path, strict_encoder: bool = True) -> LoadReport:
    """Load a student, encoder-only or timm ViT checkpoint (safetensors or torch) into ``model``.

    The position embedding is resampled when the token grid differs; other tensors whose shapes differ are
    skipped and reported. With ``strict_encoder`` a checkpoint that leaves encoder weights missing is an error.
    """
    state, ignored = _to_student_keys(read_state_dict(path))
    own = model.state_dict()
    pos_key = "encoder.pos_embed"
    if pos_key in state and state[pos_key].shape != own[pos_key].shape:
        num_prefix = 0 if model.encoder.no_embed_class else model.encoder.num_prefix_tokens
        state[pos_key] = resample_abs_pos_embed(state[pos_key], new_size=list(model.grid_size), num_prefix_tokens=num_prefix)
    report = LoadReport(str(path), ignored=ignored)
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)} -> {tuple(own[key].shape)}")
        else:
            usable[key] = value
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.missing = sorted(set(own) - set(usable))
    if not report.loaded:
        raise ValueError(f"{path} holds no tensor that fits the student (keys like {list(state)[:3]}); pass a student, encoder or timm ViT-Tiny checkpoint")
    if strict_encoder and report.missing_encoder:
        raise ValueError(f"{report.summary()}; the checkpoint does not match this ViT configuration")
    logger.info(report.summary())
    return report


def init_student(model: ViTSegmenter, initial_weights: str | Path | None = None) -> ViTSegmenter:
    """Return ``model``, loaded from ``initial_weights`` when a path is given (empty = random init)."""
    if initial_weights:
        load_student_weights(model, initial_weights)
    return model


def export_student(model: ViTSegmenter, path: str | Path, include_decoder: bool = True) -> Path:
    """Write the student's weights (``encoder.`` + ``decoder.`` keys, or the encoder only) as safetensors, the
    format ``tskd_student_segmentation`` accepts as ``initial_weights``."""
    state = {k: v for k, v in model.state_dict().items() if include_decoder or not k.startswith("decoder.")}  # encoder (+ neck)
    meta = {"image_size": str(model.image_size), "in_channels": str(model.in_channels), "num_classes": str(model.num_classes),
            "hidden_indices": ",".join(map(str, model.hidden_indices)), "parts": "encoder+decoder" if include_decoder else "encoder"}
    return save_safetensors(state, path, meta)


def _decoder_parts(state: dict[str, torch.Tensor]) -> set[str]:
    return {k.split(".")[1] for k in state if k.startswith("decoder.")}


def trained_decoder(state: dict[str, torch.Tensor]) -> str | None:
    """The name in :data:`DECODERS` of the decoder whose weights ``state`` (a student state dict) holds, if any."""
    parts = _decoder_parts(state)
    return next((name for name in DECODERS if set(dict(create_decoder(name, 3, 8, 2, 4).named_children())) == parts), None)


def require_trained_student(path: str | Path, model: torch.nn.Module, fix: str) -> str:
    """Return ``path`` when its weights fit ``model`` key for key and shape for shape (a trained ``model.pt``);
    otherwise raise a ``ValueError`` naming the file, the decoder its weights belong to and the override that builds
    that student (``fix`` says how to get the file when it is missing)."""
    state, own = read_state_dict(require_file(path, fix)), model.state_dict()
    if set(state) == set(own) and all(state[k].shape == own[k].shape for k in own):
        return str(path)
    trained, built = trained_decoder(state), trained_decoder(own)
    if trained and trained != built:
        raise ValueError(f"{path} holds a student with the {trained!r} decoder but the config builds {built or 'another'!r}; "
                         f"run with --decoder {trained} (models trained before tskd_student_segmentation 0.2.0 used 'unetr')")
    wrong = sorted(set(state) ^ set(own))[:4] + [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                                                  if k in state and state[k].shape != own[k].shape][:4]
    raise ValueError(f"{path} does not fit the student this config builds (first differences: {wrong}); set student_name, "
                     "decoder, image_size, in_channels and num_classes to those it was trained with (its metadata.json)")
