"""Overlay images: segmentation masks blended over their source images, for people to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image
from monai.visualize import blend_images

from .data.transforms import LoadSliceOrImaged

# colours for classes 1..n (background stays the image itself), registered as a matplotlib colormap for blend_images
CLASS_COLORS = ((1.0, 0.2, 0.2), (0.2, 0.9, 0.2), (0.2, 0.5, 1.0), (1.0, 0.85, 0.1), (0.9, 0.3, 0.9), (0.1, 0.9, 0.9))
CLASS_CMAP = "tskd_classes"


def _class_cmap() -> str:
    """Register (once) a listed colormap whose entry ``k`` is the colour of class ``k`` (entry 0 unused)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    if CLASS_CMAP not in matplotlib.colormaps:
        matplotlib.colormaps.register(ListedColormap([(0.0, 0.0, 0.0), *CLASS_COLORS], name=CLASS_CMAP))
    return CLASS_CMAP


def to_display(image: np.ndarray) -> np.ndarray:
    """Channel-first image (1 or 3 channels, any range) -> (H, W, 3) float in [0, 1] for display."""
    img = np.asarray(image, dtype=np.float32)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    lo, hi = np.percentile(img, (0.5, 99.5))
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.moveaxis(img, 0, -1)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Blend a class-index mask (H, W) over an (H, W, 3) [0, 1] image with ``monai.visualize.blend_images``
    (class ``k`` always gets ``CLASS_COLORS[k - 1]``, background stays the image); returns uint8 RGB (H, W, 3)."""
    mask = np.asarray(mask).astype(np.int64)
    num_colors = len(CLASS_COLORS) + 1
    classes = np.where(mask > 0, (mask - 1) % len(CLASS_COLORS) + 1, 0)
    label = ((classes + 0.5) / num_colors * (classes > 0))[None].astype(np.float32)  # bin k of the listed colormap
    blended = blend_images(np.moveaxis(np.asarray(image, np.float32), -1, 0), label, alpha=alpha, cmap=_class_cmap(),
                           rescale_arrays=False, transparent_background=True)
    return (np.clip(np.moveaxis(blended, 0, -1), 0, 1) * 255).astype(np.uint8)


class SaveOverlayd(MapTransform):
    """Write ``<output_dir>/<name>_overlay.png``: the source image of ``image`` with ``pred`` (class indices or
    one-hot / probabilities) blended over it; a prediction at another resolution is resized (nearest) to the source.
    With ``save_mask``, also ``<name>_mask.png``: the class indices (uint8) at the source resolution."""

    def __init__(self, keys: KeysCollection = "pred", output_dir: str = "./overlays", image_key: str = "image", save_mask: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.save_mask = save_mask
        self._load = LoadSliceOrImaged(image_key)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        source = d[self.image_key].meta["filename_or_obj"]
        slice_index = d[self.image_key].meta.get("slice")
        item = {self.image_key: source} | ({"slice": int(slice_index)} if slice_index is not None else {})
        image = self._load(item)[self.image_key].numpy()
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key]).detach().cpu().numpy()
            mask = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
            if mask.shape != image.shape[1:]:
                mask = torch.nn.functional.interpolate(torch.as_tensor(mask)[None, None].float(), size=image.shape[1:], mode="nearest")[0, 0].numpy()
            # MONAI's PIL reader gives (W, H); numpy images are (H, W)
            rgb = overlay(to_display(image).transpose(1, 0, 2), mask.T)
            name = Path(str(source)).name.split(".")[0] + (f"_z{int(slice_index):03d}" if slice_index is not None else "")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(self.output_dir / f"{name}_overlay.png")
            if self.save_mask:
                Image.fromarray(np.ascontiguousarray(mask.T).astype(np.uint8)).save(self.output_dir / f"{name}_mask.png")
        return d
