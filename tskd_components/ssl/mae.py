"""Masked autoencoder (MAE) pre-training of the student's ViT encoder.

Random patch masking (default 75 %), the student encoder on the visible patches only, a light transformer
decoder with mask tokens, and a mean-squared error on the per-patch normalised pixels of the masked patches.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ..networks.student import ViTSegmenter


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch * patch * C), patches in row-major order like the ViT tokens."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def require_vit(student: torch.nn.Module, method: str) -> None:
    """Refuse a student that is not a ViT (e.g. the hierarchical ``tiny_vit_5m``), naming the methods it supports."""
    if not isinstance(student, ViTSegmenter):
        raise ValueError(f"{method} pre-trains ViT students only (student_name vit_tiny); {type(student).__name__} students "
                         "are pre-trained by TS-KD or TA-KD distillation")


def random_masking(batch: int, num_patches: int, ratio: float, device: torch.device, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of kept patches (B, n_keep), sorted, and a (B, N) mask that is 1 on masked patches."""
    n_keep = max(1, int(round(num_patches * (1 - ratio))))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    keep = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values
    mask = torch.ones(batch, num_patches, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


class MAE(nn.Module):
    """MAE around a :class:`ViTSegmenter`'s encoder (only the encoder is trained and exported).

    Args:
        student: the student whose ``encoder`` is pre-trained.
        mask_ratio: fraction of patches hidden from the encoder.
        decoder_dim, decoder_depth, decoder_heads: the light reconstruction decoder.
        norm_pix_loss: reconstruct per-patch normalised pixels (mean 0, variance 1 per patch).
    """

    def __init__(self, student: ViTSegmenter, mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, norm_pix_loss: bool = True) -> None:
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        require_vit(student, "MAE (it masks ViT patch tokens)")
        self.student = student
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        enc = student.encoder
        self.patch = enc.patch_embed.patch_size[0]
        num_patches = enc.patch_embed.num_patches
        self.decoder_embed = nn.Linear(enc.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, decoder_dim))
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * student.in_channels)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    def encode_visible(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Class token + visible patch tokens through the encoder blocks: (B, 1 + n_keep, C)."""
        enc = self.student.encoder
        x = enc.patch_embed(images) + enc.pos_embed[:, enc.num_prefix_tokens :]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = enc.blocks(torch.cat([cls, x], dim=1))
        return enc.norm(x)

    def decode(self, latent: torch.Tensor, keep: torch.Tensor, num_patches: int) -> torch.Tensor:
        """Predicted pixels of every patch: (B, N, patch * patch * C)."""
        x = self.decoder_embed(latent)
        b, _, d = x.shape
        full = self.mask_token.expand(b, num_patches, d).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MAE loss of a batch and its parts (``mask_ratio`` actually used)."""
        num_patches = self.student.encoder.patch_embed.num_patches
        keep, mask = random_masking(images.shape[0], num_patches, self.mask_ratio, images.device, generator)
        pred = self.decode(self.encode_visible(images, keep), keep, num_patches)
        target = patchify(images, self.patch)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        per_patch = ((pred - target) ** 2).mean(-1)
        loss = (per_patch * mask).sum() / mask.sum()
        return loss, {"masked_fraction": mask.mean().detach()}
