"""ViT-Tiny segmentation student: a timm ViT encoder with a UNETR-style decoder built from MONAI blocks.

The encoder is the part every pre-training method (TS-KD, task-agnostic KD, MAE, MoCo v3) trains and hands on;
its state-dict keys start with ``encoder.``, the decoder's with ``decoder.``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import timm
import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from timm.layers import resample_abs_pos_embed
from torch import nn

from ..utils.weights import read_state_dict, save_safetensors

logger = logging.getLogger(__name__)


def evenly_spaced_blocks(depth: int, count: int = 4) -> tuple[int, ...]:
    """0-based indices of ``count`` evenly spaced blocks ending with the last one (12 -> 2, 5, 8, 11)."""
    return tuple(depth * (i + 1) // count - 1 for i in range(count))


class UNETRDecoder(nn.Module):
    """Decoder of UNETR for 2D: four ViT hidden states (1/16 grid) plus the image, upsampled to full resolution."""

    def __init__(self, in_channels: int, embed_dim: int, num_classes: int, feature_size: int = 16, norm_name: str = "instance") -> None:
        super().__init__()
        fs = feature_size
        self.enc1 = UnetrBasicBlock(2, in_channels, fs, kernel_size=3, stride=1, norm_name=norm_name, res_block=True)
        self.enc2 = UnetrPrUpBlock(2, embed_dim, fs * 2, num_layer=2, kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.enc3 = UnetrPrUpBlock(2, embed_dim, fs * 4, num_layer=1, kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.enc4 = UnetrPrUpBlock(2, embed_dim, fs * 8, num_layer=0, kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.dec4 = UnetrUpBlock(2, embed_dim, fs * 8, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.dec3 = UnetrUpBlock(2, fs * 8, fs * 4, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.dec2 = UnetrUpBlock(2, fs * 4, fs * 2, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.dec1 = UnetrUpBlock(2, fs * 2, fs, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True)
        self.out = UnetOutBlock(2, fs, num_classes)

    def forward(self, image: torch.Tensor, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        h1, h2, h3, h4 = hidden
        x = self.dec4(h4, self.enc4(h3))
        x = self.dec3(x, self.enc3(h2))
        x = self.dec2(x, self.enc2(h1))
        x = self.dec1(x, self.enc1(image))
        return self.out(x)


class ViTTinySegmenter(nn.Module):
    """ViT-Tiny/16 (width 192, depth 12, 3 heads) encoder + UNETR decoder; logits at the input resolution.

    Args:
        image_size: square input size, a multiple of ``patch_size`` (the token grid is ``image_size / 16``).
        in_channels: image channels (3 for ImageNet-style inputs, 1 for grey).
        num_classes: output channels, background included.
        hidden_indices: 0-based encoder blocks whose outputs feed the decoder and are returned for distillation;
            default: four evenly spaced blocks ending with the last.
        model_name, embed_dim, depth, num_heads: timm ViT configuration (smaller values build test-size models).
    """

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        num_classes: int = 2,
        hidden_indices: Sequence[int] | None = None,
        feature_size: int = 16,
        model_name: str = "vit_tiny_patch16_224",
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch_size}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.hidden_indices = tuple(hidden_indices) if hidden_indices is not None else evenly_spaced_blocks(depth)
        if len(self.hidden_indices) != 4 or max(self.hidden_indices) >= depth:
            raise ValueError(f"hidden_indices must name 4 blocks in 0..{depth - 1}, got {self.hidden_indices}")
        self.encoder = timm.create_model(
            model_name,
            pretrained=False,
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            drop_path_rate=drop_path_rate,
        )
        self.decoder = UNETRDecoder(in_channels, embed_dim, num_classes, feature_size)

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.encoder.patch_embed.grid_size)

    def forward_hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states of ``hidden_indices`` as ``(B, embed_dim, H/16, W/16)`` maps."""
        return self.encoder.forward_intermediates(x, indices=list(self.hidden_indices), output_fmt="NCHW", intermediates_only=True)

    def forward_with_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the hidden states they were decoded from (one encoder pass)."""
        hidden = self.forward_hidden(x)
        return self.decoder(x, hidden), hidden

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits; with ``return_hidden`` also the hidden states (the call distillation makes through DDP)."""
        if return_hidden:
            return self.forward_with_hidden(x)
        return self.decoder(x, self.forward_hidden(x))


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


def load_student_weights(model: ViTTinySegmenter, path: str | Path, strict_encoder: bool = True) -> LoadReport:
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


def init_student(model: ViTTinySegmenter, initial_weights: str | Path | None = None) -> ViTTinySegmenter:
    """Return ``model``, loaded from ``initial_weights`` when a path is given (empty = random init)."""
    if initial_weights:
        load_student_weights(model, initial_weights)
    return model


def export_student(model: ViTTinySegmenter, path: str | Path, include_decoder: bool = True) -> Path:
    """Write the student's weights (``encoder.`` + ``decoder.`` keys, or the encoder only) as safetensors, the
    format ``tskd_student_segmentation`` accepts as ``initial_weights``."""
    state = {k: v for k, v in model.state_dict().items() if include_decoder or k.startswith("encoder.")}
    meta = {"image_size": str(model.image_size), "in_channels": str(model.in_channels), "num_classes": str(model.num_classes),
            "hidden_indices": ",".join(map(str, model.hidden_indices)), "parts": "encoder+decoder" if include_decoder else "encoder"}
    return save_safetensors(state, path, meta)
