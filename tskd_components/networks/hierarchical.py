"""Students on hierarchical timm backbones (four stages at strides 4, 8, 16, 32), e.g. TinyViT-5M as in MobileSAM.

They keep the ViT student's interface, so the decoders, the distillation losses and the teacher cache work unchanged:
each stage's map is projected by a 1x1 convolution to ``embed_dim`` channels and brought to the 1/16 grid (average
pooling from the finer stages, bilinear from the 1/32 one), giving four (B, embed_dim, S/16, S/16) hidden maps."""

from __future__ import annotations

from typing import Any, List, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .decoders import create_decoder
from .student import Segmenter, register_student


class HierarchicalSegmenter(Segmenter):
    """A hierarchical timm backbone + a decoder of ``decoders.DECODERS``; logits at the input resolution.

    Args:
        image_size: square input size, a multiple of 32 (the coarsest stage's stride).
        in_channels, num_classes: input channels and output classes (background included).
        hidden_indices: the backbone stages (0-3) whose maps feed the decoder and distillation; default all four.
        feature_size, decoder: as for :class:`~tskd_components.networks.student.ViTSegmenter`.
        encoder_name: timm model name (its ``features_only`` form must give four stages).
        embed_dim: width of the hidden maps (192 = ViT-Tiny's, so both students distil through the same projection).
        encoder_overrides: timm keyword arguments (e.g. ``depths`` for a test-size model).
    """

    def __init__(self, image_size: int = 256, in_channels: int = 3, num_classes: int = 2, hidden_indices: Sequence[int] | None = None,
                 feature_size: int = 16, decoder: str = "light", encoder_name: str = "tiny_vit_5m_224", embed_dim: int = 192,
                 **encoder_overrides: Any) -> None:
        super().__init__()
        if image_size % 32:
            raise ValueError(f"image_size {image_size} must be a multiple of 32 for a 4-stage backbone")
        self.encoder = timm.create_model(encoder_name, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3),
                                         in_chans=in_channels, **encoder_overrides)
        reductions = self.encoder.feature_info.reduction()
        if list(reductions) != [4, 8, 16, 32]:
            raise ValueError(f"{encoder_name} gives stages at strides {reductions}; a hierarchical student needs 4, 8, 16, 32")
        self.hidden_indices = tuple(hidden_indices) if hidden_indices is not None else (0, 1, 2, 3)
        if len(self.hidden_indices) != 4 or not all(0 <= i < 4 for i in self.hidden_indices):
            raise ValueError(f"hidden_indices must name 4 stages in 0..3, got {self.hidden_indices}")
        self.image_size, self.in_channels, self.num_classes, self.embed_dim = image_size, in_channels, num_classes, embed_dim
        self.neck = nn.ModuleList([nn.Conv2d(c, embed_dim, kernel_size=1) for c in self.encoder.feature_info.channels()])
        self.decoder = create_decoder(decoder, in_channels, embed_dim, num_classes, feature_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.image_size // 16, self.image_size // 16)

    def forward_hidden(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, C, S, S) images -> four (B, embed_dim, S/16, S/16) maps of the stages in ``hidden_indices``."""
        grid = [x.shape[-2] // 16, x.shape[-1] // 16]
        features = self.encoder(x)
        stages: List[torch.Tensor] = []
        for i, project in enumerate(self.neck):
            y = project(features[i])
            y = F.adaptive_avg_pool2d(y, grid) if i < 2 else F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
            stages.append(y)
        return [stages[i] for i in self.hidden_indices]


@register_student
def tiny_vit_5m(**kwargs: Any) -> HierarchicalSegmenter:
    """TinyViT-5M (MobileSAM's image encoder family; stages of 64, 128, 160, 320 channels, 5.1 M parameters) with the
    light decoder by default. Supports TS-KD and TA-KD; not MAE (which masks ViT patch tokens) nor MoCo v3 (which
    reads a ViT class token)."""
    kwargs.setdefault("decoder", "light")
    return HierarchicalSegmenter(encoder_name="tiny_vit_5m_224", **kwargs)
