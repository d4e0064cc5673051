"""Reader for the TSKD dataset layout and deterministic label-budget subsets.

A dataset folder holds ``images/<id>.<ext>``, ``masks/<id>.<ext>`` (class indices, 0 = background),
``split.json`` (``train`` / ``val`` / ``test`` id lists) and ``dataset.json`` (name, modality, classes,
image_channels). Images are 2D files (PNG, JPEG, TIFF) or NIfTI volumes; a volume contributes one item per
slice along its last axis, and all slices of a volume stay in the split that names the volume.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils.io import write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii.gz", ".nii")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset folder or file does not fit the expected layout; the message names the file and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    """The content of ``dataset.json``."""

    root: Path
    name: str
    modality: str
    classes: dict[int, str]
    image_channels: int

    @property
    def num_classes(self) -> int:
        """Number of output channels a segmenter needs (background included)."""
        return max(self.classes) + 1


def sample_dataset_dir() -> Path:
    """The HC18 sample shipped in the repository (``sample_data/hc18``), the bundles' default dataset."""
    path = Path(__file__).resolve().parents[2] / "sample_data" / "hc18"
    if not (path / "dataset.json").is_file():
        raise DatasetError(f"the sample dataset is not at {path} (it ships with the git checkout, not the wheel); pass --dataset_dir")
    return path


def read_dataset_info(dataset_dir: str | Path) -> DatasetInfo:
    """Read and check ``dataset.json``."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass --dataset_dir pointing at a folder with images/, masks/, split.json, dataset.json")
    meta_file = root / "dataset.json"
    meta = _read_json(meta_file, "a dataset.json with 'name', 'classes' and 'image_channels'")
    try:
        classes = {int(k): str(v) for k, v in meta["classes"].items()}
    except (KeyError, AttributeError, ValueError) as err:
        raise DatasetError(f"{meta_file}: 'classes' must map class indices to names (e.g. {{\"0\": \"background\", \"1\": \"lesion\"}}): {err}") from err
    try:
        channels = int(meta.get("image_channels", 1))
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{meta_file}: 'image_channels' must be the number 1 (grey) or 3 (RGB), got {meta.get('image_channels')!r}") from err
    if 0 not in classes or len(classes) < 2:
        raise DatasetError(f"{meta_file}: 'classes' must contain 0 (background) and at least one foreground class, got {classes}")
    if sorted(classes) != list(range(len(classes))):
        raise DatasetError(f"{meta_file}: class indices must run 0..{len(classes) - 1} without gaps, got {sorted(classes)}; "
                           "renumber the classes (and the mask values) so they are contiguous")
    if channels not in (1, 3):
        raise DatasetError(f"{meta_file}: 'image_channels' must be 1 (grey) or 3 (RGB), got {channels}")
    return DatasetInfo(root, str(meta.get("name", root.name)), str(meta.get("modality", "")), classes, channels)


def read_split(dataset_dir: str | Path) -> dict[str, list[str]]:
    """Read ``split.json`` as ``{split: [ids]}``."""
    split_file = Path(dataset_dir) / "split.json"
    split = _read_json(split_file, "a split.json with 'train', 'val' and 'test' id lists")
    if not isinstance(split, dict) or not any(k in split for k in SPLITS):
        raise DatasetError(f"{split_file}: expected an object with 'train', 'val' and 'test' id lists")
    out = {k: [str(i) for i in split.get(k, [])] for k in SPLITS}
    for k, ids in out.items():
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise DatasetError(f"{split_file}: ids listed more than once in '{k}': {repeated[:5]}; list each id once")
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = sorted(set(out[a]) & set(out[b]))
            if shared:
                raise DatasetError(f"{split_file}: ids in both '{a}' and '{b}' (leakage): {shared[:5]}; every id belongs to one split")
    return out


def find_file(folder: Path, item_id: str) -> Path | None:
    """Return ``folder/<item_id>.<ext>`` for the first known image suffix that exists."""
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{item_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def is_nifti(path: str | Path) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def load_datalist(dataset_dir: str | Path, split: str, validate: bool = True) -> list[dict[str, Any]]:
    """Items ``{"id", "image", "label"[, "slice"]}`` of one split, in ``split.json`` order.

    With ``validate`` every image/mask pair is opened once: unreadable files, size mismatches and mask values
    outside ``dataset.json`` classes raise :class:`DatasetError` before any training starts.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}'; use one of {SPLITS}")
    info = read_dataset_info(dataset_dir)
    ids = read_split(dataset_dir)[split]
    if not ids:
        raise DatasetError(f"{info.root / 'split.json'}: split '{split}' is empty; list at least one id under '{split}'")
    items: list[dict[str, Any]] = []
    for item_id in ids:
        image = find_file(info.root / "images", item_id)
        if image is None:
            raise DatasetError(f"image for id '{item_id}' not found: expected {info.root / 'images' / item_id}.<{'|'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}>; add the file or remove the id from split.json")
        label = find_file(info.root / "masks", item_id)
        if label is None:
            raise DatasetError(f"mask for id '{item_id}' missing: expected {info.root / 'masks' / item_id}.<ext> beside {image}; add the mask or remove the id from split.json")
        if validate:
            _validate_pair(image, label, info)
        if is_nifti(image):
            depth = nib.load(str(image)).shape[-1]
            items += [{"id": f"{item_id}_z{k:03d}", "image": str(image), "label": str(label), "slice": k} for k in range(depth)]
        else:
            items.append({"id": item_id, "image": str(image), "label": str(label)})
    return items


def validate_dataset(dataset_dir: str | Path) -> DatasetInfo:
    """Check the whole dataset before any training: ``dataset.json``, ``split.json`` (ids unique, splits disjoint) and
    every image/mask pair of every split (readable, same size, values among the classes). A corrupt *test* mask is
    then found in seconds, not after the training it would have wasted. Returns the dataset's info."""
    for split, ids in read_split(dataset_dir).items():
        if ids:
            load_datalist(dataset_dir, split, validate=True)
    return read_dataset_info(dataset_dir)


def validation_datalist(dataset_dir: str | Path) -> list[dict[str, Any]]:
    """The ``val`` split, or an empty list (with a warning) when the dataset has none, e.g. ``amos_ct``."""
    if not read_split(dataset_dir)["val"]:
        warnings.warn(f"{Path(dataset_dir) / 'split.json'} has no 'val' ids: training runs without validation and keeps its final weights")
        return []
    return load_datalist(dataset_dir, "val")


def load_unlabeled(folder: str | Path, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Image-only items from a folder of images (or its ``images/`` subfolder), e.g. a transfer set."""
    root = Path(folder)
    image_dir = root / "images" if (root / "images").is_dir() else root
    if not image_dir.is_dir():
        raise DatasetError(f"unlabeled image folder {image_dir} does not exist")
    if ids is None:
        files = sorted(p for p in image_dir.iterdir() if p.is_file() and str(p).lower().endswith(IMAGE_SUFFIXES))
    else:
        files = []
        for item_id in ids:
            found = find_file(image_dir, item_id)
            if found is None:
                raise DatasetError(f"image for id '{item_id}' not found in {image_dir}")
            files.append(found)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {image_dir}")
    items: list[dict[str, Any]] = []
    for path in files:
        stem = path.name[: -len(next(s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)))]
        if is_nifti(path):
            depth = _open_image(path).shape[-1]
            items += [{"id": f"{stem}_z{k:03d}", "image": str(path), "slice": k} for k in range(depth)]
        else:
            _open_image(path)
            items.append({"id": stem, "image": str(path)})
    return items


def load_transfer_set(folder: str | Path) -> list[dict[str, Any]]:
    """Image-only items of a transfer set: the ``train`` split of a dataset folder (never its val/test images),
    or every image of a plain image folder (e.g. one written by the synthesis bundle)."""
    root = Path(folder)
    if (root / "split.json").is_file():
        return [{k: v for k, v in it.items() if k != "label"} for it in load_datalist(root, "train", validate=False)]
    return load_unlabeled(root)


def select_labeled(ids: Sequence[str], num_labeled: int | None, seed: int) -> list[str]:
    """Deterministic label budget: the first ``num_labeled`` ids of a seeded permutation of the sorted ids.

    Budgets drawn with the same seed are nested (the 10-label subset is inside the 20-label subset).
    ``None`` or a non-positive budget selects every id.
    """
    ordered = sorted(ids)
    if num_labeled is None or num_labeled <= 0:
        return ordered
    if num_labeled > len(ordered):
        raise DatasetError(f"num_labeled={num_labeled} exceeds the {len(ordered)} labeled training items; choose num_labeled <= {len(ordered)}")
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in order[:num_labeled]]


def labeled_datalist(
    dataset_dir: str | Path, num_labeled: int | None = None, seed: int = 0, output_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Training items restricted to a label budget; the chosen ids go to ``<output_dir>/labeled_ids.json``."""
    items = load_datalist(dataset_dir, "train")
    chosen = set(select_labeled([it["id"] for it in items], num_labeled, seed))
    subset = [it for it in items if it["id"] in chosen]
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        record = {"dataset_dir": str(dataset_dir), "num_labeled": num_labeled, "seed": seed, "ids": sorted(chosen)}
        write_json(out / "labeled_ids.json", record)
    return subset


def unlabeled_train_datalist(dataset_dir: str | Path, num_labeled: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Training items outside the label budget, as image-only items (the real part of a transfer set)."""
    items = load_datalist(dataset_dir, "train")
    chosen = set(select_labeled([it["id"] for it in items], num_labeled, seed)) if num_labeled else set()
    return [{k: v for k, v in it.items() if k != "label"} for it in items if it["id"] not in chosen]


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path} is missing; the dataset folder needs {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); fix the file") from err


def _open_image(path: Path) -> np.ndarray:
    """Read a whole image or volume as an array, or raise a :class:`DatasetError` naming the file."""
    try:
        if is_nifti(path):
            return np.asarray(nib.load(str(path)).dataobj)
        with Image.open(path) as img:
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, EOFError) as err:
        raise DatasetError(f"cannot read {path}: {err}; replace it with a valid image file or remove its id from split.json") from err


def _validate_pair(image: Path, label: Path, info: DatasetInfo) -> None:
    img = _open_image(image)
    mask = _open_image(label)
    img_shape = img.shape if is_nifti(image) or img.ndim == 2 else img.shape[:2]
    if mask.ndim != len(img_shape):
        raise DatasetError(f"mask {label} has shape {mask.shape}; expected a single-channel class-index mask of shape {img_shape} like {image}")
    if tuple(mask.shape) != tuple(img_shape):
        raise DatasetError(f"mask {label} has size {mask.shape} but image {image} has size {img_shape}; resample the mask to the image grid")
    values = np.unique(mask)
    unknown = sorted(set(values.tolist()) - set(info.classes))
    if unknown:
        raise DatasetError(f"mask {label} holds label values {unknown} not among the classes {sorted(info.classes)} of {info.root / 'dataset.json'}; add them to 'classes' or fix the mask")
