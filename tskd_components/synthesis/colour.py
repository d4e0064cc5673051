"""Colour-matched pool pre-training: each pool image takes the per-channel intensity statistics of one of the target's
training images, so that a diffusion model pre-trained on the pool of other datasets already draws the target's
colours (and grey levels) and target fine-tuning only has to move shapes and texture.

Why: pre-trained on the raw pool (fundus, colonoscopy, CT) and fine-tuned for 801 steps on ph2, the model keeps the
dermatoscope's round field but paints it green, blue or purple (``docs/results/synthesis``); the pool's colour
statistics survive fine-tuning.

The same matching applies to the samples themselves (:func:`match_target_statistics`): each synthetic image takes the
channel statistics of one target training image, drawn as for the pool. Structure stays the model's; only six
numbers per colour image (two per grey one) come from the real image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import Dataset
from monai.transforms import MapTransform

REFERENCE_MEAN, REFERENCE_STD = "reference_mean", "reference_std"  # datalist keys: the statistics an image is matched to
# how a set of synthetic images was made, as quality reports and transfer-set manifests record it
SAMPLES_RAW = "DDIM samples as drawn"
SAMPLES_MATCHED = "DDIM samples, each given the channel statistics of one training image (match_target_statistics)"
FLAT = 1e-4  # a channel with a smaller standard deviation (in the [-1, 1] range) is flat: it takes the reference mean


def channel_statistics(images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
    """Per-image, per-channel mean and standard deviation of (C, H, W) images: an (N, 2, C) array."""
    return np.stack([np.stack([img.flatten(1).mean(1).numpy(), img.flatten(1).std(1).numpy()]) for img in images]).astype(np.float64)


def target_statistics(items: Sequence[Mapping[str, Any]], transform) -> np.ndarray:
    """:func:`channel_statistics` of the target's ``items`` after ``transform`` (the diffusion preprocessing without
    augmentation, so that the statistics are in the space the model learns: [-1, 1], the training size)."""
    return channel_statistics([torch.as_tensor(item["image"]) for item in Dataset(list(items), transform)])


def assign_references(pool_items: Sequence[Mapping[str, Any]], statistics: np.ndarray, seed: int = 0) -> list[dict[str, Any]]:
    """Copies of ``pool_items``, each with the statistics (``REFERENCE_MEAN``, ``REFERENCE_STD``) of one target image
    drawn with ``seed``: every target image is used about equally often, so the pool carries the target's spread of
    colours, not only its average. Deterministic for a seed, so cached datasets and resumed runs see the same."""
    if len(statistics) == 0:
        raise ValueError("no target images to take colour statistics from; the target's train split is empty")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(statistics)) for _ in range(-(-len(pool_items) // len(statistics)))])
    return [{**item, REFERENCE_MEAN: statistics[j, 0].tolist(), REFERENCE_STD: statistics[j, 1].tolist()}
            for item, j in zip(pool_items, order)]


class MatchChannelStatsd(MapTransform):
    """Give each channel of the image the item's ``REFERENCE_MEAN`` / ``REFERENCE_STD`` (standardise the image's own
    channel, rescale, shift), clipped to ``[minv, maxv]``. Items without reference statistics pass unchanged, so one
    pipeline serves both the pool (matched) and the target (as it is). A channel flatter than ``FLAT`` (std in the
    [-1, 1] range) becomes the reference mean, not amplified rounding noise (:func:`match_channel_statistics`)."""

    def __init__(self, keys: KeysCollection, minv: float = -1.0, maxv: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.minv, self.maxv = minv, maxv

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if REFERENCE_MEAN not in d:
            return d
        for key in self.key_iterator(d):
            if len(d[REFERENCE_MEAN]) != d[key].shape[0]:
                raise ValueError(f"{d.get('id', key)}: {d[key].shape[0]} channels but reference statistics for {len(d[REFERENCE_MEAN])}; "
                                 "take the references from a target with as many channels as the model")
            d[key] = match_channel_statistics(d[key], d[REFERENCE_MEAN], d[REFERENCE_STD], self.minv, self.maxv)
        return d


def match_channel_statistics(img: torch.Tensor, mean: Sequence[float], std: Sequence[float], minv: float = -1.0, maxv: float = 1.0,
                             flat: float = FLAT) -> torch.Tensor:
    """(C, ...) image with channel means ``mean`` and standard deviations ``std`` (standardise each channel, rescale,
    shift), clipped to ``[minv, maxv]``; a channel flatter than ``flat`` becomes the reference mean."""
    shape = (img.shape[0],) + (1,) * (img.ndim - 1)
    mean = torch.as_tensor(mean, dtype=img.dtype).view(shape)
    std = torch.as_tensor(std, dtype=img.dtype).view(shape)
    own = img.flatten(1)
    own_mean, own_std = own.mean(1).view(shape), own.std(1).view(shape)
    gain = torch.where(own_std > flat, std / own_std.clamp_min(flat), torch.zeros_like(std))
    return ((img - own_mean) * gain + mean).clamp(minv, maxv)


def samples_description(matched: bool) -> str:
    """How a set of synthetic images was made, as quality reports and transfer-set manifests record it."""
    return SAMPLES_MATCHED if matched else SAMPLES_RAW


def match_target_statistics(images: torch.Tensor, target_dir: str | Path, seed: int = 0, statistics: np.ndarray | None = None) -> torch.Tensor:
    """Synthetic (N, C, S, S) images in [-1, 1], each given the channel statistics of one of ``target_dir``'s training
    images (never its test split) at the images' size: every training image serves about equally often, drawn with
    ``seed`` (:func:`assign_references`). A model whose layout is right but whose colours drift (ph2's pool-pre-trained
    models paint skin blue or green) then draws the target's colours. ``statistics``: the training images'
    :func:`channel_statistics` when the caller has them at the images' size already (read from ``target_dir`` if not)."""
    from .diffusion import diffusion_preprocessing, synthesis_datalist

    if statistics is None:
        statistics = target_statistics(synthesis_datalist(target_dir), diffusion_preprocessing(images.shape[-1], images.shape[1], augment=False))
    references = assign_references([{"index": i} for i in range(len(images))], statistics, seed)
    return torch.stack([match_channel_statistics(img, ref[REFERENCE_MEAN], ref[REFERENCE_STD])
                        for img, ref in zip(images, references)])


def colour_matched(pool_items: Sequence[Mapping[str, Any]], target_dir: str | Path, image_size: int, channels: int,
                   seed: int = 0) -> list[dict[str, Any]]:
    """``pool_items`` with reference statistics drawn from the target's training images (never its test split), for
    :class:`MatchChannelStatsd` in the diffusion preprocessing."""
    from .diffusion import diffusion_preprocessing, synthesis_datalist

    target = Path(target_dir).resolve()
    if any(Path(item["image"]).resolve().is_relative_to(target) for item in pool_items):
        raise ValueError(f"colour matching is for pre-training on a pool of other datasets, but these items include {target}'s own "
                         "images; set a pool (or colour_match false)")
    statistics = target_statistics(synthesis_datalist(target_dir), diffusion_preprocessing(image_size, channels, augment=False))
    return assign_references(pool_items, statistics, seed)
