"""Where a transfer set's synthetic images come from, as stages of an experiment: a diffusion model trained at the
scale's settings (the default), a ``tskd synthesis`` recipe's model (``synthesis_dir`` / ``synthesis_arm``), or a
folder of samples drawn once elsewhere, e.g. on a GPU (``synthesis_samples``, :mod:`tskd_components.synthesis.samples`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.dataset import read_split
from .scales import Scale
from .stages import Stage

if TYPE_CHECKING:
    from .experiment import ExperimentSpec


def build_transfer_dir(spec: ExperimentSpec, params: Scale, dataset: Path, folder: Path, common: dict[str, Any]) -> Path:
    """The dataset itself when ``spec.transfer_size`` does not exceed its training images, else the folder of the
    ``transfer_size`` set (real training images + synthetic ones) under ``folder``, built by a stage (and, by default,
    the stage that trains its diffusion model first)."""
    num_real = len(read_split(dataset)["train"])
    if spec.transfer_size <= num_real:
        return Path(dataset).resolve()
    from ..synthesis import MANIFEST, SAMPLES_MANIFEST, UNET_WEIGHTS  # diffusers is imported only when synthesis runs
    from ..synthesis.samples import read_samples_manifest

    name = Path(dataset).name
    model_dir = folder / "synthesis" / "run" / "model"
    synth = {**common, "image_size": params.synthesis_image_size, "seed": 0, "output_dir": str(folder / "synthesis" / "run"),
             "model_dir": str(model_dir), "max_epochs": params.synthesis_epochs, "ddim_steps": params.ddim_steps}
    model_input, prefix = model_dir / UNET_WEIGHTS, ""
    if spec.synthesis_samples:  # drawn elsewhere: the set takes the folder's first samples, no model is needed here
        samples = Path(spec.synthesis_samples).resolve()
        drawn = read_samples_manifest(samples, spec.transfer_size - num_real)  # too few: a clear error before any stage
        synth.update(model_dir=str(samples), samples_dir=str(samples), image_size=drawn["image_size"])
        model_input, prefix = samples / SAMPLES_MANIFEST, f"drawn_{drawn['model_sha256'][:12]}_"
    elif spec.synthesis_dir:  # a recipe trained by `tskd synthesis`: sample from its model, at its size
        model_dir = Path(spec.synthesis_dir).resolve() / name / spec.synthesis_arm / "run" / "model"
        if not (model_dir / UNET_WEIGHTS).is_file():
            raise FileNotFoundError(f"no diffusion model at {model_dir}: run `tskd synthesis --dataset {name} --run-dir "
                                    f"{spec.synthesis_dir}` first")
        synth.update(model_dir=str(model_dir), image_size=json.loads((model_dir / "unet" / "config.json").read_text())["sample_size"])
        model_input, prefix = model_dir / UNET_WEIGHTS, f"{spec.synthesis_arm}_"
    else:
        Stage("synthesis", f"synthesis {name}", folder / "synthesis", "synthesis", synth, inputs=[Path(dataset)], outputs=[model_input]).run()
    out = folder / f"{prefix}{'matched_' if spec.match_samples else ''}set_{spec.transfer_size}" / "transfer_set"
    build = {**synth, "target_size": spec.transfer_size, "transfer_dir": str(out), **({"match_samples": True} if spec.match_samples else {})}
    Stage("transfer set", f"transfer set {name} {spec.transfer_size}", out.parent, "transfer_set", build, inputs=[model_input],
          outputs=[out / MANIFEST]).run()
    return out
