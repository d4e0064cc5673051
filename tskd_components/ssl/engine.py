"""Ignite iteration step and view augmentation for self-supervised pre-training (MAE, MoCo v3)."""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import torch
from ignite.engine import Engine
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandSpatialCropd,
    Randomizable,
    Resized,
)

from .mocov3 import MoCoV3


class TwoViewsd(Randomizable, MapTransform):
    """Make ``view1`` and ``view2`` from ``image`` with two independent draws of a random augmentation."""

    def __init__(self, augmentation: Compose, key: str = "image") -> None:
        MapTransform.__init__(self, keys=[key])
        self.augmentation = augmentation
        self.key = key

    def set_random_state(self, seed: int | None = None, state=None) -> "TwoViewsd":
        self.augmentation.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Randomness is drawn by the wrapped augmentation on each call."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for name in ("view1", "view2"):
            d[name] = self.augmentation({"image": d[self.key]})["image"]
        return d


def view_augmentation(image_size: int, min_scale: float = 0.4) -> Compose:
    """MoCo-style views for medical images: random crop (40-100 % of the side) resized back, flips, intensity,
    gamma, blur and noise."""
    return Compose(
        [
            RandSpatialCropd("image", roi_size=(int(image_size * min_scale),) * 2, max_roi_size=(image_size, image_size), random_size=True),
            Resized("image", spatial_size=(image_size, image_size), mode="bilinear"),
            RandFlipd("image", prob=0.5, spatial_axis=1),
            RandFlipd("image", prob=0.5, spatial_axis=0),
            RandScaleIntensityd("image", factors=0.3, prob=0.8),
            RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.8),
            RandGaussianSmoothd("image", sigma_x=(0.1, 1.5), sigma_y=(0.1, 1.5), prob=0.5),
            RandGaussianNoised("image", std=0.05, prob=0.3),
        ]
    )


class SSLStep:
    """``iteration_update`` for MONAI's ``SupervisedTrainer`` whose network is an :class:`MAE` or :class:`MoCoV3`:
    loss, backward, optimizer step and, for MoCo v3, the momentum-encoder update on the cosine schedule."""

    def __call__(self, engine: Engine, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        model = engine.network
        model.train()
        device = engine.state.device
        engine.optimizer.zero_grad(set_to_none=True)
        if isinstance(model, MoCoV3):
            loss, parts = model(torch.as_tensor(batch["view1"]).to(device), torch.as_tensor(batch["view2"]).to(device))
        else:
            loss, parts = model(torch.as_tensor(batch["image"]).to(device))
        loss.backward()
        engine.optimizer.step()
        if isinstance(model, MoCoV3):
            total = engine.state.max_epochs * engine.state.epoch_length
            model.update_momentum_encoder(engine.state.iteration / total)
        return {"loss": loss.detach(), **parts}
