"""Prompts drawn from an object mask the way SAM is trained: a jittered bounding box or a positive point."""

from __future__ import annotations

import torch


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) boolean mask -> its bounding box (x0, y0, x1, y1) in pixel coordinates (x along the last axis)."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()


def jitter_box(box: torch.Tensor, size: int, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Move each box side by up to ``fraction`` of the box's side length (SAM: 10%, at most 20 px), kept in the image."""
    extent = torch.stack([box[2] - box[0], box[3] - box[1]]).repeat(2)
    noise = (torch.rand(4, generator=generator).to(box.device) * 2 - 1) * fraction * extent  # generator on the CPU
    return (box + noise).clamp(0, size)


def random_point(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A pixel of the mask, uniformly, as (x, y) at the pixel centre."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    i = torch.randint(len(rows), (1,), generator=generator).item()
    return torch.stack([cols[i], rows[i]]).float() + 0.5
