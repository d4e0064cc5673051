"""The synthesis bundle's GPU configuration (train.json + gpu.json: 128 px, the wider UNet, batch 32, EMA) trained on
one target's training images for a wall-clock budget, then ``--samples`` DDIM samples drawn into a samples folder
(``draw_samples``) that a CPU machine turns into transfer sets (``tskd study synthetic --synthesis-samples``).

    python3 benchmarks/synthesis_gpu.py --dataset-dir .gpu/data/hc18 --out $OUT --train-seconds 300 --samples 2860

Writes ``<out>/synthesis_gpu.json`` (steps, seconds, GPU, model SHA-256, mean loss per 100 steps), the model under
``run/model`` and ``samples/``. A time budget, not a step count, because one lease is short: the record says how
many steps ran. ``benchmarks/synthesis_gpu.sh`` is the lease's whole command (wheels, data, split archive back).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import TimeLimit
from monai.bundle import ConfigParser

from tskd_components.synthesis import UNET_WEIGHTS, draw_samples, save_unet
from tskd_components.utils.io import write_json
from tskd_components.utils.weights import file_digest

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "tskd_synthesis" / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-seconds", type=int, default=300)
    parser.add_argument("--samples", type=int, default=2860)
    parser.add_argument("--sample-batch-size", type=int, default=256)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--preset", default="gpu", choices=["cpu", "gpu"], help="gpu: train.json + gpu.json; cpu: train.json (for a dry run)")
    parser.add_argument("--num-workers", type=int, default=4)
    args = parser.parse_args()
    out = Path(args.out)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    config = ConfigParser()
    config.read_config([str(CONFIGS / "train.json")] + ([str(CONFIGS / "gpu.json")] if args.preset == "gpu" else []))
    config.update({"bundle_root": str(out), "dataset_dir": str(Path(args.dataset_dir).resolve()), "output_dir": str(out / "run"),
                   "max_epochs": 1_000_000, "num_workers": args.num_workers, "seed": 0})
    config.parse()
    config.get_parsed_content("determinism")
    trainer = config.get_parsed_content("train#trainer")
    steps, losses = [0], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(args.train_seconds))

    @trainer.on(Events.ITERATION_COMPLETED)
    def count(engine) -> None:
        steps[0] += 1
        losses.append(float(engine.state.output["loss"]))

    start = time.perf_counter()
    trainer.run()
    train_seconds = time.perf_counter() - start
    model_dir = out / "run" / "model"
    save_unet(config.get_parsed_content("ema"), config.get_parsed_content("noise_scheduler"), model_dir)
    start = time.perf_counter()
    draw_samples(model_dir, out / "samples", args.samples, args.ddim_steps, args.sample_batch_size, seed=0)
    sample_seconds = time.perf_counter() - start
    record = {"dataset_dir": args.dataset_dir, "preset": args.preset, "image_size": config["image_size"], "batch_size": config["batch_size"],
              "block_out_channels": config["block_out_channels"], "unet_parameters": sum(p.numel() for p in config.get_parsed_content("network").parameters()),
              "train_seconds_budget": args.train_seconds, "train_seconds": train_seconds, "optimizer_steps": steps[0], "epochs": trainer.state.epoch,
              "seconds_per_step": train_seconds / max(steps[0], 1),
              "loss_per_100_steps": [sum(losses[i:i + 100]) / len(losses[i:i + 100]) for i in range(0, len(losses), 100)],
              "samples": args.samples, "ddim_steps": args.ddim_steps,
              "sample_seconds": sample_seconds, "seconds_per_sample": sample_seconds / args.samples,
              "model_sha256": file_digest(model_dir / UNET_WEIGHTS), "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__}
    write_json(out / "synthesis_gpu.json", record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
