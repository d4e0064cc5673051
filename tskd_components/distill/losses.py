"""Distillation losses: hidden-feature alignment and segmentation-prediction alignment.

``TaskSpecificKDLoss`` (TS-KD) aligns the student with the LoRA-fine-tuned teacher on both; ``TaskAgnosticKDLoss``
aligns features with the frozen original SAM only. Both return the total and a dict of their parts.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

FEATURE_LOSSES = ("mse", "smooth_l1", "cosine")


class FeatureAlignment(nn.Module):
    """Align student hidden states with teacher hidden states, layer by layer.

    Each student map (B, student_dim, h, w) goes through a learnable 1x1 projection to the teacher width, is
    resized to the teacher's token grid when the grids differ, and is compared with the teacher map; both are
    normalised per token (layer norm over channels, no affine) when ``normalize`` is set, so layers with large
    activations do not dominate.

    Args:
        student_dim, teacher_dim: channel widths (ViT-Tiny 192; SAM vit_b 768).
        num_layers: number of (student block, teacher block) pairs.
        loss: ``mse``, ``smooth_l1`` or ``cosine`` (1 - cosine similarity per token).
        layer_weights: weight of each pair (default 1 each); the total is their weighted mean.
    """

    def __init__(self, student_dim: int, teacher_dim: int, num_layers: int, loss: str = "mse",
                 layer_weights: Sequence[float] | None = None, normalize: bool = True) -> None:
        super().__init__()
        if loss not in FEATURE_LOSSES:
            raise ValueError(f"feature loss must be one of {FEATURE_LOSSES}, got {loss!r}")
        weights = list(layer_weights) if layer_weights is not None else [1.0] * num_layers
        if len(weights) != num_layers:
            raise ValueError(f"{len(weights)} layer weights for {num_layers} layers")
        self.projections = nn.ModuleList(nn.Conv2d(student_dim, teacher_dim, kernel_size=1) for _ in range(num_layers))
        self.register_buffer("layer_weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.loss = loss
        self.normalize = normalize

    def project(self, student: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Student maps in teacher width, on the teacher grids."""
        out = []
        for proj, s, grid in zip(self.projections, student, grids):
            p = proj(s)
            if tuple(p.shape[-2:]) != tuple(grid):
                p = F.interpolate(p, size=tuple(grid), mode="bilinear", align_corners=False)
            out.append(p)
        return out

    def _distance(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            s = F.layer_norm(s.movedim(1, -1), s.shape[1:2]).movedim(-1, 1)
            t = F.layer_norm(t.movedim(1, -1), t.shape[1:2]).movedim(-1, 1)
        if self.loss == "mse":
            return F.mse_loss(s, t)
        if self.loss == "smooth_l1":
            return F.smooth_l1_loss(s, t)
        return (1 - F.cosine_similarity(s, t, dim=1)).mean()

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if len(student) != len(teacher) or len(student) != len(self.projections):
            raise ValueError(f"feature alignment expects {len(self.projections)} layer pairs, got {len(student)} student / {len(teacher)} teacher maps")
        projected = self.project(student, [t.shape[-2:] for t in teacher])
        per_layer = torch.stack([self._distance(s, t.detach()) for s, t in zip(projected, teacher)])
        total = (per_layer * self.layer_weights).sum() / self.layer_weights.sum()
        return total, {f"feature_{i}": v.detach() for i, v in enumerate(per_layer)}


class PredictionAlignment(nn.Module):
    """Align student and teacher segmentation logits: temperature-scaled KL per pixel (times T^2, averaged over
    pixels) plus, optionally, Dice between the student's softmax and the teacher's soft masks. Teacher logits at
    a lower resolution (as cached) are upsampled bilinearly to the student's."""

    def __init__(self, temperature: float = 2.0, kl_weight: float = 1.0, dice_weight: float = 0.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.kl_weight = kl_weight
        self.dice_weight = dice_weight
        self.dice = DiceLoss(softmax=True, include_background=True)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        teacher = teacher.detach()
        if teacher.shape[-2:] != student.shape[-2:]:
            teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
        t = self.temperature
        log_p_student = F.log_softmax(student / t, dim=1)
        log_p_teacher = F.log_softmax(teacher / t, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1).mean() * t * t
        parts = {"kl": kl.detach()}
        total = self.kl_weight * kl
        if self.dice_weight > 0:
            dice = self.dice(student, teacher.softmax(1))
            parts["dice"] = dice.detach()
            total = total + self.dice_weight * dice
        return total, parts


class TaskSpecificKDLoss(nn.Module):
    """TS-KD: ``feature_weight`` x feature alignment + ``prediction_weight`` x prediction alignment with the
    fine-tuned teacher."""

    def __init__(self, student_dim: int, teacher_dim: int, num_layers: int = 4, feature_weight: float = 1.0,
                 prediction_weight: float = 1.0, feature_loss: str = "mse", layer_weights: Sequence[float] | None = None,
                 temperature: float = 2.0, dice_weight: float = 0.0) -> None:
        super().__init__()
        self.features = FeatureAlignment(student_dim, teacher_dim, num_layers, feature_loss, layer_weights)
        self.predictions = PredictionAlignment(temperature, 1.0, dice_weight)
        self.feature_weight = feature_weight
        self.prediction_weight = prediction_weight

    def forward(self, student_hidden, teacher_hidden, student_logits, teacher_logits) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if teacher_logits is None:
            raise ValueError("TS-KD needs the teacher's logits; this teacher cache holds features only (frozen mode) - use ta_kd or rebuild the cache in fine_tuned mode")
        feat, feat_parts = self.features(student_hidden, teacher_hidden)
        pred, pred_parts = self.predictions(student_logits, teacher_logits)
        total = self.feature_weight * feat + self.prediction_weight * pred
        return total, {"features": feat.detach(), "predictions": pred.detach(), **feat_parts, **pred_parts}


class TaskAgnosticKDLoss(nn.Module):
    """Task-agnostic KD: feature alignment with the frozen original SAM only (logits are ignored)."""

    def __init__(self, student_dim: int, teacher_dim: int, num_layers: int = 4, feature_loss: str = "mse",
                 layer_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.features = FeatureAlignment(student_dim, teacher_dim, num_layers, feature_loss, layer_weights)

    def forward(self, student_hidden, teacher_hidden, student_logits=None, teacher_logits=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feat, parts = self.features(student_hidden, teacher_hidden)
        return feat, {"features": feat.detach(), **parts}
