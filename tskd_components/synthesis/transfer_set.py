"""Transfer set = the real training images (labels unused) + synthetic images up to a target size, as a folder
``images/`` with a ``manifest.json`` recording each image's source, seed and model checkpoint hash."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from ..utils.io import write_json
from ..utils.weights import file_digest
from .colour import match_target_statistics, samples_description
from .diffusion import UNET_WEIGHTS, assert_no_test_images, load_unet, sample, synthesis_datalist, write_pngs
from .samples import read_samples, read_samples_manifest

MANIFEST = "manifest.json"


def build_transfer_set(dataset_dir: str | Path, model_dir: str | Path, output_dir: str | Path, target_size: int,
                       steps: int = 50, batch_size: int = 8, seed: int = 0, match_statistics: bool = False,
                       samples_dir: str | Path = "", eta: float = 0.0) -> Path:
    """Write ``output_dir/images`` and ``output_dir/manifest.json``; returns the manifest path.

    Real images are the dataset's train split (never test); synthetic images fill the rest with DDIM samples of
    the model in ``model_dir``, drawn with ``seed``. A target below the number of real images keeps the first
    ``target_size`` real images (sorted ids) and warns. ``samples_dir``: the synthetic images are the first ones of
    that drawn-samples folder (:mod:`.samples`, e.g. drawn on a GPU) instead of new samples of ``model_dir``
    (``steps``, ``eta``, ``batch_size`` and ``seed`` then come from its manifest). ``eta``: DDIM's step noise.
    ``match_statistics``: each synthetic image takes the channel statistics of one real training image
    (:func:`~tskd_components.synthesis.colour.match_target_statistics`, drawn with ``seed``); the manifest records it.
    """
    out = Path(output_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    real = sorted(synthesis_datalist(dataset_dir), key=lambda it: it["id"])
    assert_no_test_images(real, dataset_dir)
    if target_size < len(real):
        warnings.warn(f"target_size {target_size} is below the {len(real)} real training images; keeping the first {target_size}")
        real = real[:target_size]
    entries = []
    for it in real:
        dst = images_dir / f"real_{Path(it['image']).name}"
        shutil.copyfile(it["image"], dst)
        entries.append({"file": f"images/{dst.name}", "source": "real", "origin": it["image"], "sha256": file_digest(dst)})
    num_synthetic = target_size - len(real)
    if num_synthetic > 0:
        if samples_dir:
            drawn = read_samples_manifest(samples_dir, num_synthetic)
            images, model_hash, seed, steps = read_samples(samples_dir, num_synthetic), drawn["model_sha256"], drawn["seed"], drawn["ddim_steps"]
            eta = drawn.get("eta", 0.0)
        else:
            unet, scheduler_config = load_unet(model_dir)
            model_hash = file_digest(Path(model_dir) / UNET_WEIGHTS)
            images = sample(unet, scheduler_config, num_synthetic, steps, batch_size, seed, eta=eta)
        if match_statistics:
            images = match_target_statistics(images, dataset_dir, seed)
        for i, path in enumerate(write_pngs(images, images_dir)):
            entries.append({"file": f"images/{path.name}", "source": "synthetic", "seed": seed, "index": i, "ddim_steps": steps, "eta": eta,
                            "model_sha256": model_hash, "sha256": file_digest(path), **({"samples_dir": str(samples_dir)} if samples_dir else {})})
    manifest = {"dataset_dir": str(dataset_dir), "target_size": target_size, "num_real": len(real), "num_synthetic": max(num_synthetic, 0),
                "synthetic_samples": samples_description(match_statistics), "images": entries}
    return write_json(out / MANIFEST, manifest)
