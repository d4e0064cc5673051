"""MoCo v3 pre-training of the student's ViT encoder: two augmented views, a momentum encoder whose momentum
follows a cosine schedule to 1, projection and prediction MLP heads, and a symmetric InfoNCE loss."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.student import ViTSegmenter
from .mae import require_vit


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, last_bn: bool) -> nn.Sequential:
    """Linear-BN-ReLU layers ending with a linear layer (and an affine-free BN when ``last_bn``), as in MoCo v3."""
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
        last = i == num_layers - 1
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if not last:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*layers)


def cosine_momentum(progress: float, base: float) -> float:
    """Momentum at ``progress`` in [0, 1] of training: ``base`` at the start, rising to 1 on a half cosine."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


class MoCoV3(nn.Module):
    """MoCo v3 around a :class:`ViTSegmenter`'s encoder (the class token is the image representation).

    Args:
        student: the student whose ``encoder`` is pre-trained (and exported).
        dim, mlp_dim: output and hidden widths of the projection / prediction heads.
        temperature: InfoNCE temperature.
        base_momentum: momentum at the start; it follows :func:`cosine_momentum` to 1.
    """

    def __init__(self, student: ViTSegmenter, dim: int = 256, mlp_dim: int = 1024, temperature: float = 0.2, base_momentum: float = 0.99) -> None:
        super().__init__()
        require_vit(student, "MoCo v3 (its representation is the ViT class token)")
        self.student = student
        self.temperature = temperature
        self.base_momentum = base_momentum
        self.momentum = base_momentum
        self.projector = mlp(student.embed_dim, mlp_dim, dim, 3, last_bn=True)
        self.predictor = mlp(dim, mlp_dim, dim, 2, last_bn=False)
        self.momentum_encoder = copy.deepcopy(student.encoder)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters()):
            p.requires_grad_(False)

    @staticmethod
    def represent(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder.forward_features(images)[:, 0]

    def contrastive(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """InfoNCE of queries against keys (positives on the diagonal), scaled by 2 * temperature."""
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / self.temperature
        return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device)) * 2 * self.temperature

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q1 = self.predictor(self.projector(self.represent(self.student.encoder, view1)))
        q2 = self.predictor(self.projector(self.represent(self.student.encoder, view2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.represent(self.momentum_encoder, view1))
            k2 = self.momentum_projector(self.represent(self.momentum_encoder, view2))
        loss = self.contrastive(q1, k2) + self.contrastive(q2, k1)
        return loss, {"momentum": torch.tensor(self.momentum)}

    @torch.no_grad()
    def update_momentum_encoder(self, progress: float) -> float:
        """EMA of the online encoder and projector into the momentum copies; returns the momentum used."""
        self.momentum = cosine_momentum(progress, self.base_momentum)
        online = list(self.student.encoder.parameters()) + list(self.projector.parameters())
        target = list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters())
        for p_target, p in zip(target, online):
            p_target.mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)
        return self.momentum
