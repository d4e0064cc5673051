"""Sampler settings of one trained diffusion model, scored as the bundle's report scores them (matched samples).

    python benchmarks/sampler_sweep.py --model-dir runs/synthesis_60min/hc18/target_long/run/model \\
        --dataset-dir ../shared/data/hc18 --standin-checkpoint runs/foundation_v2/standin/standin.pth \\
        --settings 50:0 100:1 50:0:trailing --seed 0 --samples 140 --out runs/sampler_sweep/hc18_1602

Each setting is ``DDIM steps:eta[:timestep spacing]`` (eta 0: deterministic DDIM, 1: ancestral; spacing: the
scheduler's ``timestep_spacing``, default the model's). For each, ``--samples`` images are drawn with ``--seed``,
given the training images' channel statistics and scored by ``quality_report`` (stand-in and random-feature Frechet
distance, k-NN precision / recall, the 5-fold two-sample test, memorisation) into ``<out>/<setting>_seed<seed>/``;
one line per setting is printed with the sampling time, and ``<out>/sweep_seed<seed>.json`` collects them. The
training cost of the model is the same for every setting; the sampling cost grows with the steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from monai.data import Dataset

from tskd_components.synthesis import (
    channel_statistics,
    diffusion_preprocessing,
    load_unet,
    match_target_statistics,
    quality_report,
    sample,
    synthesis_datalist,
)
from tskd_components.synthesis.colour import samples_description
from tskd_components.utils.io import write_json


def parse_setting(text: str) -> tuple[int, float, str | None]:
    """``"100:1"`` -> (100, 1.0, None); ``"50:0:trailing"`` -> (50, 0.0, "trailing")."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a setting is steps:eta[:spacing], got {text!r}")
    return int(parts[0]), float(parts[1]), parts[2] if len(parts) == 3 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--standin-checkpoint", required=True)
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=[(50, 0.0, None), (100, 1.0, None)])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=140)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unet, scheduler_config = load_unet(args.model_dir)
    size, channels = unet.config.sample_size, unet.config.in_channels
    real = torch.stack([item["image"] for item in Dataset(synthesis_datalist(args.dataset_dir), diffusion_preprocessing(size, channels, augment=False))])
    statistics = channel_statistics(real)
    rows = []
    for steps, eta, spacing in args.settings:
        name = f"ddim{steps}_eta{eta:g}" + (f"_{spacing}" if spacing else "")
        config = dict(scheduler_config, **({"timestep_spacing": spacing} if spacing else {}))
        start = time.perf_counter()
        synthetic = sample(unet, config, args.samples, steps, batch_size=args.batch_size, seed=args.seed, eta=eta)
        seconds = time.perf_counter() - start
        synthetic = match_target_statistics(synthetic, args.dataset_dir, args.seed, statistics=statistics)
        folder = Path(args.out) / f"{name}_seed{args.seed}"
        report = quality_report(real, synthetic, folder, grid_count=16, standin_checkpoint=args.standin_checkpoint,
                                samples=samples_description(True))
        sampler = {"ddim_steps": steps, "eta": eta, "timestep_spacing": config.get("timestep_spacing"), "seed": args.seed,
                   "batch_size": args.batch_size, "sample_seconds": round(seconds, 1), "threads": args.threads}
        write_json(folder / "quality.json", {**report, "sampler": sampler, "model_dir": args.model_dir})
        standin = report["standin"]
        rows.append({"setting": name, **sampler, "standin_fid": standin["fid"], "standin_two_sample": standin["two_sample_accuracy"],
                     "standin_two_sample_ci95": standin["two_sample_ci95"], "standin_precision": standin["precision"],
                     "standin_recall": standin["recall"], "fid": report["fid"], "two_sample": report["two_sample_accuracy"],
                     "memorised_share": report["memorisation"]["share_copied"]})
        low, high = standin["two_sample_ci95"]
        print(f"{name:24s} seed {args.seed}: two-sample (stand-in) {standin['two_sample_accuracy']:.3f} [{low:.2f}, {high:.2f}], "
              f"FD stand-in {standin['fid']:.2f}, precision / recall {standin['precision']:.3f} / {standin['recall']:.3f}, "
              f"two-sample (random) {report['two_sample_accuracy']:.3f}, memorised {report['memorisation']['share_copied']:.3f}, "
              f"sampling {seconds:.0f} s", flush=True)
    write_json(Path(args.out) / f"sweep_seed{args.seed}.json", {"model_dir": args.model_dir, "dataset_dir": args.dataset_dir,
                                                                 "standin_checkpoint": args.standin_checkpoint, "rows": rows})


if __name__ == "__main__":
    main()
