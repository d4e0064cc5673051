"""Segment Anything, prompt-free and multi-class: the variant registry, the model and official-checkpoint adaptation.

SAM is assembled from ``segment_anything.modeling`` classes with the registry's ``vit_b`` / ``vit_l`` /
``vit_h`` shapes, at a configurable input size (the registry fixes 1024 px and 3+1 mask tokens). An official
checkpoint is adapted on load: the absolute position embedding and the global-attention relative position
tables are interpolated to the new token grid, and the mask tokens / hypernetwork MLPs are repeated to give
one mask token per class. Without prompts, every mask token decodes one class's logit map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from ..utils.weights import read_state_dict
from .layers import evenly_spaced_blocks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamSpec:
    """Shape of a SAM image encoder and mask decoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8


SAM_VARIANTS: dict[str, SamSpec] = {}


def register_sam_variant(name: str, spec: SamSpec) -> SamSpec:
    """Add a SAM shape to the registry under ``name`` (a name can be registered once)."""
    if name in SAM_VARIANTS:
        raise ValueError(f"SAM variant {name!r} is already registered")
    SAM_VARIANTS[name] = spec
    return spec


def sam_spec(variant: str) -> SamSpec:
    """The registered shape of ``variant``, or a clear error listing the registered ones."""
    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r}; choose one of {sorted(SAM_VARIANTS)}")
    return SAM_VARIANTS[variant]


def sam_hidden_layers(variant: str, count: int = 4) -> tuple[int, ...]:
    """Encoder blocks whose outputs distillation aligns with the student (vit_b: 2, 5, 8, 11)."""
    return evenly_spaced_blocks(sam_spec(variant).depth, count)


register_sam_variant("vit_b", SamSpec(768, 12, 12, (2, 5, 8, 11)))
register_sam_variant("vit_l", SamSpec(1024, 24, 16, (5, 11, 17, 23)))
register_sam_variant("vit_h", SamSpec(1280, 32, 16, (7, 15, 23, 31)))
# smaller configurations of the same classes, random init only: a CPU-trainable teacher and a test size
register_sam_variant("small", SamSpec(256, 6, 8, (1, 3, 5), window_size=8, prompt_dim=128, decoder_depth=2, decoder_mlp_dim=512, decoder_heads=4))
register_sam_variant("tiny", SamSpec(64, 4, 2, (1, 3), window_size=4, prompt_dim=32, decoder_depth=1, decoder_mlp_dim=64, decoder_heads=2))
# the foundation stand-in pre-trained here (tskd foundation): a 22 M-parameter encoder (4x ViT-Tiny's), SAM's decoder
register_sam_variant("standin", SamSpec(384, 12, 6, (2, 5, 8, 11), window_size=4))
CHECKPOINT_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


def build_sam_parts(spec: SamSpec, image_size: int, num_mask_tokens: int = 4,
                    patch_size: int = 16) -> tuple[ImageEncoderViT, PromptEncoder, MaskDecoder]:
    """segment-anything's image encoder, prompt encoder and mask decoder in the shape of ``spec`` at ``image_size``,
    with ``num_mask_tokens`` mask tokens (SAM: 4, one single-mask + three multimask outputs)."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of {patch_size}")
    grid = image_size // patch_size
    image_encoder = ImageEncoderViT(
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=4,
        out_chans=spec.prompt_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=spec.window_size,
        global_attn_indexes=spec.global_attn_indexes,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=spec.prompt_dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=16
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=num_mask_tokens - 1,
        transformer=TwoWayTransformer(depth=spec.decoder_depth, embedding_dim=spec.prompt_dim, mlp_dim=spec.decoder_mlp_dim, num_heads=spec.decoder_heads),
        transformer_dim=spec.prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return image_encoder, prompt_encoder, mask_decoder


class PromptFreeSAM(nn.Module):
    """SAM's image encoder + mask decoder without prompts: one logit map per class at the input resolution.

    Inputs are ImageNet-normalised RGB images (the same as SAM's own pixel normalisation of 0-255 inputs).
    """

    def __init__(self, spec: SamSpec, num_classes: int, image_size: int = 1024, patch_size: int = 16) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.image_size = image_size
        self.image_encoder, self.prompt_encoder, self.mask_decoder = build_sam_parts(spec, image_size, num_classes, patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_encoder.pos_embed.shape[1:3]

    def encode(self, x: torch.Tensor, hidden_indices: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, S, S) images -> image embedding (B, prompt_dim, S/16, S/16) and the outputs of the
        ``hidden_indices`` blocks as (B, embed_dim, S/16, S/16)."""
        enc = self.image_encoder
        x = enc.patch_embed(x) + enc.pos_embed
        hidden = []
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i in hidden_indices:
                hidden.append(x.permute(0, 3, 1, 2))
        return enc.neck(x.permute(0, 3, 1, 2)), hidden

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, prompt_dim, h, w) embedding -> (B, num_classes, S, S) logits: every mask token decoded without
        prompts (batched over images), upsampled to the input size."""
        dec = self.mask_decoder
        b, c, h, w = embedding.shape
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(0).expand(b, -1, -1)
        src = embedding + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        pos = self.prompt_encoder.get_dense_pe().expand(b, -1, -1, -1)
        hs, src = dec.transformer(src, pos, tokens)
        mask_tokens = hs[:, 1 : 1 + dec.num_mask_tokens]
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
        return F.interpolate(masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def forward_with_hidden(self, x: torch.Tensor, hidden_indices: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        embedding, hidden = self.encode(x, hidden_indices)
        return self.decode(embedding), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


def adapt_sam_state_dict(state: dict[str, torch.Tensor], model: PromptFreeSAM) -> dict[str, torch.Tensor]:
    """Fit an official SAM state dict to ``model``: resize position tables, one mask token per class."""
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        if key not in own:
            continue
        target = own[key].shape
        if value.shape == target:
            out[key] = value
        elif key == "image_encoder.pos_embed":  # (1, H, W, C)
            out[key] = F.interpolate(value.permute(0, 3, 1, 2), size=target[1:3], mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        elif key.endswith(("rel_pos_h", "rel_pos_w")):  # (2 * size - 1, head_dim)
            out[key] = F.interpolate(value.T[None], size=target[0], mode="linear", align_corners=False)[0].T
        elif key == "mask_decoder.mask_tokens.weight":
            out[key] = value[torch.arange(target[0]) % value.shape[0]]
    n_old = state["mask_decoder.mask_tokens.weight"].shape[0] if "mask_decoder.mask_tokens.weight" in state else 0
    for key in own:  # hypernetwork MLP i of class i starts from pre-trained MLP (i mod n_old)
        if key.startswith("mask_decoder.output_hypernetworks_mlps.") and key not in out and n_old:
            i = int(key.split(".")[2])
            source = key.replace(f"mlps.{i}.", f"mlps.{i % n_old}.", 1)
            if source in state:
                out[key] = state[source]
    return out


def build_prompt_free_sam(
    variant: str = "vit_b",
    num_classes: int = 2,
    image_size: int = 1024,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
) -> PromptFreeSAM:
    """SAM ``variant`` at ``image_size`` with ``num_classes`` mask tokens, from an official checkpoint.

    ``random_init=True`` (tests, small-scale experiments without SAM weights) skips the checkpoint and says so.
    """
    model = PromptFreeSAM(sam_spec(variant), num_classes, image_size)
    if random_init:
        logger.warning(f"SAM {variant} is randomly initialised (random_init=True): no Segment Anything pre-training")
        return model
    expected = CHECKPOINT_FILES.get(variant, "<none: the 'tiny' variant exists only with random_init=True>")
    if not checkpoint or not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {checkpoint or '(not set)'} not found; download the official {variant} weights ({expected}) "
            "from https://github.com/facebookresearch/segment-anything#model-checkpoints and pass its path as sam_checkpoint, "
            "or set random_init true for an untrained SAM-architecture teacher"
        )
    state = read_state_dict(checkpoint)
    adapted = adapt_sam_state_dict(state, model)
    own = model.state_dict()
    if len(adapted) < 0.95 * len(own):
        raise ValueError(f"{checkpoint} is not a SAM {variant} checkpoint: only {len(adapted)} of the {len(own)} tensors of "
                         f"SAM {variant} fit (its keys look like {sorted(state)[:3]}); pass the official SAM file of this variant "
                         "(or the foundation stand-in with sam_variant standin)")
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    skipped = sorted(set(state) - set(adapted))
    logger.info(f"loaded {checkpoint}: {len(adapted)} tensors; not loaded {len(skipped)} {skipped[:5]}; left at init {len(missing)} {missing[:5]}")
    return model
