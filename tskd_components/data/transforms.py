"""MONAI dictionary transforms for 2D medical images: load (files or NIfTI slices), channels, intensity, size."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureTyped,
    LoadImage,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
)

from .dataset import DatasetError, is_nifti

# ImageNet statistics for inputs scaled to [0, 1]; SAM's pixel mean/std are the same values times 255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LoadSliceOrImaged(MapTransform):
    """Load 2D images as channel-first ``MetaTensor``s; items with a ``slice`` key take that slice of a NIfTI volume."""

    def __init__(self, keys: KeysCollection, slice_key: str = "slice", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key
        self._load = LoadImage(image_only=True, ensure_channel_first=True)
        self._load_volume = LoadImage(image_only=True, reader="NibabelReader")

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            try:
                if is_nifti(path):
                    index = int(d.get(self.slice_key, 0))
                    volume = self._load_volume(path)
                    if volume.ndim != 3:
                        raise DatasetError(f"{path}: expected a 3D NIfTI volume (X, Y, slices), got shape {tuple(volume.shape)}")
                    plane = volume.as_tensor()[..., index][None].float()
                    d[key] = MetaTensor(plane, meta={"filename_or_obj": path, self.slice_key: index})
                else:
                    d[key] = self._load(path)
            except DatasetError:
                raise
            except Exception as err:  # MONAI readers raise many types; all mean "unreadable file"
                raise DatasetError(f"cannot read {path}: {err}; replace it with a valid image file or remove its id from split.json") from err
        return d


class ConvertChannelsd(MapTransform):
    """Bring channel-first images to ``channels`` channels: grey -> RGB by repetition, RGB -> grey by luminance,
    RGBA -> RGB by dropping alpha. Any other channel count is an error naming the file."""

    def __init__(self, keys: KeysCollection, channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            n = img.shape[0]
            if n == 4:
                img, n = img[:3], 3
            if n not in (1, 3):
                name = img.meta.get("filename_or_obj", key) if isinstance(img, MetaTensor) else key
                raise DatasetError(f"{name}: image has {n} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA); convert it to grey or RGB")
            if n == 1 and self.channels == 3:
                img = img.repeat(3, *([1] * (img.ndim - 1)))
            elif n == 3 and self.channels == 1:
                weights = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype).view(3, *([1] * (img.ndim - 1)))
                img = (img * weights).sum(0, keepdim=True)
            d[key] = img
        return d


class CheckLabeld(MapTransform):
    """Fail with the mask's file name when a mask's size or values do not fit the image and class list."""

    def __init__(self, keys: KeysCollection, num_classes: int, image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            name = label.meta.get("filename_or_obj", key) if isinstance(label, MetaTensor) else key
            if label.shape[0] != 1:
                raise DatasetError(f"mask {name} has {label.shape[0]} channels; masks must be single-channel class indices")
            if self.image_key in d and tuple(label.shape[1:]) != tuple(d[self.image_key].shape[1:]):
                raise DatasetError(f"mask {name} has size {tuple(label.shape[1:])} but its image has {tuple(d[self.image_key].shape[1:])}; resample the mask to the image grid")
            lo, hi = float(label.min()), float(label.max())
            if lo < 0 or hi >= self.num_classes:
                raise DatasetError(f"mask {name} holds label values in [{lo:g}, {hi:g}] but the dataset has {self.num_classes} classes (0..{self.num_classes - 1}); fix the mask or dataset.json")
        return d


def intensity_transform(keys: KeysCollection, intensity_range: Sequence[float] | None = None) -> MapTransform:
    """Scale to [0, 1]: per image min-max, or a fixed window ``(a_min, a_max)`` (e.g. CT HU), clipped."""
    if intensity_range is None:
        return ScaleIntensityd(keys, minv=0.0, maxv=1.0)
    a_min, a_max = intensity_range
    return ScaleIntensityRanged(keys, a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True)


def normalize_transform(keys: KeysCollection, channels: int) -> MapTransform:
    """ImageNet normalisation (the statistics SAM and timm ViTs were pre-trained with)."""
    mean = IMAGENET_MEAN if channels == 3 else (float(np.mean(IMAGENET_MEAN)),)
    std = IMAGENET_STD if channels == 3 else (float(np.mean(IMAGENET_STD)),)
    return NormalizeIntensityd(keys, subtrahend=mean, divisor=std, channel_wise=True)


def preprocessing(
    image_size: int,
    num_classes: int | None = None,
    channels: int = 3,
    intensity_range: Sequence[float] | None = None,
    with_label: bool = True,
    keep_native_label: bool = False,
) -> Compose:
    """Deterministic part: load, channels, intensity to [0, 1], ImageNet normalisation, square resize.

    ``keep_native_label`` also keeps the mask as loaded, at the image's own size, under ``label_native`` (for
    metrics at native resolution; batches of images of different sizes then need batch size 1)."""
    keys = ["image", "label"] if with_label else ["image"]
    steps: list = [LoadSliceOrImaged(keys)]
    if with_label:
        if num_classes is None:
            raise ValueError("num_classes is needed to check masks")
        steps.append(CheckLabeld("label", num_classes=num_classes))
        if keep_native_label:
            steps.append(CopyItemsd("label", names="label_native"))
    steps += [
        ConvertChannelsd("image", channels=channels),
        intensity_transform("image", intensity_range),
        normalize_transform("image", channels),
        Resized(keys, spatial_size=(image_size, image_size), mode=["bilinear", "nearest"][: len(keys)], anti_aliasing=False),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
    ]
    return Compose(steps)


def augmentation(with_label: bool = True, prob: float = 0.5) -> Compose:
    """Training augmentation applied after :func:`preprocessing` (geometric on image and mask, photometric on image)."""
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"][: len(keys)]
    return Compose(
        [
            RandFlipd(keys, prob=prob, spatial_axis=0),
            RandFlipd(keys, prob=prob, spatial_axis=1),
            RandAffined(
                keys,
                prob=prob,
                rotate_range=(np.pi / 12,),
                scale_range=(0.1, 0.1),
                mode=modes,
                padding_mode="zeros",
            ),
            RandScaleIntensityd("image", factors=0.1, prob=prob),
            RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=prob),
            RandGaussianNoised("image", std=0.05, prob=prob / 2),
        ]
    )
