"""Drawn samples: a diffusion model's DDIM samples written once (e.g. on a GPU) as a folder of PNGs with a
``samples.json`` manifest, so that transfer sets and quality reports can be built from them anywhere (e.g. on a
CPU, where sampling 3000 images at 128 px would take hours) without the model.

Layout of a samples folder: ``synthetic_00000.png`` ... in the order they were drawn, and ``samples.json``
(model SHA-256 and size, seed, DDIM steps, batch size, count, each file's SHA-256). Drawing resumes: a folder
interrupted mid-way keeps its finished batches (recorded in ``samples.started.json``) and draws the rest with the
same noise stream, so the result does not depend on the interruption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.dataset import DatasetError
from ..utils.io import write_json
from ..utils.weights import file_digest
from .diffusion import UNET_WEIGHTS, ddim_batches, load_unet, write_pngs

SAMPLES_MANIFEST = "samples.json"
SAMPLES_STARTED = "samples.started.json"


def draw_samples(model_dir: str | Path, samples_dir: str | Path, num_images: int, steps: int = 50, batch_size: int = 64,
                 seed: int = 0, device: str | torch.device | None = None, eta: float = 0.0) -> Path:
    """Draw ``num_images`` DDIM samples of the model in ``model_dir`` into ``samples_dir``; returns ``samples.json``.

    The same (model, seed, steps, eta, batch_size) give the same images, also after an interruption (finished batches
    are kept, the noise of the skipped ones is drawn again without running the model); a finished draw with the
    same settings is not drawn again."""
    out = Path(samples_dir)
    out.mkdir(parents=True, exist_ok=True)
    unet, scheduler_config = load_unet(model_dir)
    settings = {"model_dir": str(model_dir), "model_sha256": file_digest(Path(model_dir) / UNET_WEIGHTS), "image_size": unet.config.sample_size,
                "channels": unet.config.in_channels, "seed": seed, "ddim_steps": steps, "eta": eta, "batch_size": batch_size, "num_images": num_images}
    # what the model predicts (its scheduler's config) is recorded for the reader; the model's digest already fixes it
    described = {**settings, "prediction_type": scheduler_config.get("prediction_type", "epsilon")}
    finished = out / SAMPLES_MANIFEST
    before_eta = {"eta": 0.0}  # folders drawn before eta was recorded were deterministic DDIM
    if finished.is_file() and before_eta | {k: v for k, v in json.loads(finished.read_text()).items() if k not in ("files", "prediction_type")} == settings:
        return finished  # drawn already
    started = out / SAMPLES_STARTED
    done = 0
    if started.is_file() and before_eta | json.loads(started.read_text())["settings"] == settings:
        done = json.loads(started.read_text())["finished_batches"]
    write_json(started, {"settings": settings, "finished_batches": done})
    for batch_index, images in ddim_batches(unet, scheduler_config, num_images, steps, batch_size, seed, device, skip_batches=done, eta=eta):
        write_pngs(images, out, start=batch_index * batch_size)
        write_json(started, {"settings": settings, "finished_batches": batch_index + 1})
    files = [out / f"synthetic_{i:05d}.png" for i in range(num_images)]
    manifest = write_json(out / SAMPLES_MANIFEST, {**described, "files": [{"file": f.name, "sha256": file_digest(f)} for f in files]})
    started.unlink()
    return manifest


def read_samples_manifest(samples_dir: str | Path, needed: int = 0) -> dict[str, Any]:
    """The ``samples.json`` of a samples folder; a clear error when it is missing or holds fewer than ``needed``."""
    path = Path(samples_dir) / SAMPLES_MANIFEST
    if not path.is_file():
        raise DatasetError(f"{samples_dir} is not a finished samples folder ({SAMPLES_MANIFEST} missing): draw it with "
                           "bundles/tskd_synthesis/configs/sample.json (or let an interrupted draw finish)")
    manifest = json.loads(path.read_text())
    if len(manifest["files"]) < needed:
        raise DatasetError(f"{samples_dir} holds {len(manifest['files'])} samples but {needed} are needed; draw more "
                           f"(num_samples >= {needed})")
    return manifest


def read_samples(samples_dir: str | Path, count: int) -> torch.Tensor:
    """The first ``count`` samples as (N, C, H, W) in [-1, 1], the layout :func:`~.diffusion.sample` returns (the
    inverse of :func:`~.diffusion.write_pngs`, whose PNGs are transposed to the image's own orientation)."""
    manifest = read_samples_manifest(samples_dir, count)
    arrays = [np.asarray(Image.open(Path(samples_dir) / f["file"]), dtype=np.float32) for f in manifest["files"][:count]]
    images = torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (N, H, W[, 3]) -> (N, C, H, W)
    return images.transpose(-1, -2).contiguous()
