"""Segmentation students: a timm ViT encoder with a decoder built from MONAI blocks, and their registry.

Variants are registered by name in the timm way (``@register_student`` on a builder; ``create_student(name, ...)``);
the name decides the encoder's sizes. The encoder is the part every pre-training method (TS-KD, task-agnostic KD,
MAE, MoCo v3) trains and hands on; its state-dict keys start with ``encoder.``, the decoder's with ``decoder.``.
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple, Union

import timm
import torch
from torch import nn

from .decoders import create_decoder
from .layers import evenly_spaced_blocks

_STUDENTS: dict[str, Callable[..., "Segmenter"]] = {}


class Segmenter(nn.Module):
    """What every student offers (the decoders, distillation and export rely on it): each subclass defines
    ``forward_hidden`` (images -> four (B, embed_dim, S/16, S/16) maps) and ``decoder``; the logits follow here."""

    def forward_with_hidden(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Logits (B, num_classes, S, S) and the hidden states they were decoded from (one encoder pass)."""
        hidden = self.forward_hidden(x)
        return self.decoder(x, hidden), hidden

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Logits; with ``return_hidden`` also the hidden states (the call distillation makes through DDP)."""
        if return_hidden:
            return self.forward_with_hidden(x)
        return self.decoder(x, self.forward_hidden(x))


class ViTSegmenter(Segmenter):
    """A timm ViT encoder + a decoder of `decoders.DECODERS` (the light one by default); logits at the input resolution.

    Args:
        image_size: square input size, a multiple of the patch size (the token grid is ``image_size / patch``).
        in_channels: image channels (3 for ImageNet-style inputs, 1 for grey).
        num_classes: output channels, background included.
        hidden_indices: 0-based encoder blocks whose outputs feed the decoder and are returned for distillation;
            default: four evenly spaced blocks ending with the last.
        feature_size: decoder width.
        decoder: ``"light"`` (1x1 fusion at 1/16, one convolution per 2x upsampling, an image stem at 1/2 and 1/4;
            the default) or ``"unetr"`` (UNETR's, full-resolution convolutions: ~11x the FLOPs, the paper's student
            before the light decoder was measured, see docs/results/student_variants); see ``decoders.DECODERS``.
        encoder_name: timm model name of the encoder (set by the registered variant).
        drop_path_rate: stochastic depth of the encoder.
        encoder_overrides: timm keyword arguments that change the variant's sizes (``depth=4`` builds a test model).
    """

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        num_classes: int = 2,
        hidden_indices: Sequence[int] | None = None,
        feature_size: int = 16,
        decoder: str = "light",
        encoder_name: str = "vit_tiny_patch16_224",
        drop_path_rate: float = 0.0,
        **encoder_overrides: Any,
    ) -> None:
        super().__init__()
        self.encoder = timm.create_model(encoder_name, pretrained=False, img_size=image_size, in_chans=in_channels, num_classes=0,
                                         global_pool="", drop_path_rate=drop_path_rate, **encoder_overrides)
        patch = self.encoder.patch_embed.patch_size[0]
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch}")
        depth = len(self.encoder.blocks)
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.hidden_indices = tuple(hidden_indices) if hidden_indices is not None else evenly_spaced_blocks(depth)
        self.patch_size = patch
        if len(self.hidden_indices) != 4 or max(self.hidden_indices) >= depth:
            raise ValueError(f"hidden_indices must name 4 blocks in 0..{depth - 1}, got {self.hidden_indices}")
        self.decoder = create_decoder(decoder, in_channels, self.encoder.embed_dim, num_classes, feature_size)

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.encoder.patch_embed.grid_size)

    def forward_hidden(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, C, S, S) images -> hidden states of ``hidden_indices`` as (B, embed_dim, S/16, S/16) maps (block outputs
        before the final norm, as timm's ``forward_intermediates``; written as a loop so TorchScript can script it)."""
        encoder = self.encoder
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = encoder.norm_pre(encoder.patch_drop(encoder._pos_embed(encoder.patch_embed(x))))
        blocks: List[torch.Tensor] = []
        for block in encoder.blocks:
            tokens = block(tokens)
            blocks.append(tokens)
        hidden: List[torch.Tensor] = []
        for i in self.hidden_indices:
            grid = blocks[i][:, encoder.num_prefix_tokens:]
            hidden.append(grid.transpose(1, 2).reshape(grid.shape[0], grid.shape[2], h, w))
        return hidden


def register_student(builder: Callable[..., Segmenter]) -> Callable[..., Segmenter]:
    """Register a student builder under its function name (``@register_student def vit_tiny(**kwargs)``)."""
    if builder.__name__ in _STUDENTS:
        raise ValueError(f"student {builder.__name__!r} is already registered")
    _STUDENTS[builder.__name__] = builder
    return builder


def list_students() -> list[str]:
    return sorted(_STUDENTS)


def create_student(name: str = "vit_tiny", **kwargs: Any) -> "Segmenter":
    """Build the registered student ``name`` (keyword arguments go to :class:`ViTSegmenter`)."""
    if name not in _STUDENTS:
        raise ValueError(f"unknown student {name!r}; registered: {list_students()}")
    return _STUDENTS[name](**kwargs)


@register_student
def vit_tiny(**kwargs: Any) -> ViTSegmenter:
    """ViT-Tiny/16 (width 192, depth 12, 3 heads, 5.5 M encoder parameters): the paper's student."""
    return ViTSegmenter(encoder_name="vit_tiny_patch16_224", **kwargs)
