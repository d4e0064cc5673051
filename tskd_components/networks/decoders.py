"""Segmentation decoders of the student: ViT hidden states (and the image) -> per-class logits."""

from __future__ import annotations

from typing import List

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import nn


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

    def forward(self, image: torch.Tensor, hidden: List[torch.Tensor]) -> torch.Tensor:
        """(B, in_channels, S, S) image and four (B, embed_dim, S/16, S/16) maps -> (B, num_classes, S, S) logits."""
        h1, h2, h3, h4 = hidden[0], hidden[1], hidden[2], hidden[3]
        x = self.dec4(h4, self.enc4(h3))
        x = self.dec3(x, self.enc3(h2))
        x = self.dec2(x, self.enc2(h1))
        x = self.dec1(x, self.enc1(image))
        return self.out(x)
