"""Seconds per diffusion training step and per sampled image (DDIM) at 64 and 128 px on this machine.

    python benchmarks/synthesis.py [--sizes 64 128] [--batch-size 8] [--ddim-steps 50] [--preset gpu --device cuda]
    python benchmarks/synthesis.py --sizes 64 --batch-size 16 --objectives epsilon:0 v_prediction:5 --steps 20

Uses the UNet of the bundle's configs (``--preset cpu``: train.json, channels 32/64/128/128; ``gpu``: with the
gpu.json overlay) on random inputs (the cost does not depend on the data) and prints the ratio of each size to the
first. ``--objectives`` (``prediction_type:snr_gamma``): the training step of each, timed in turns in this process
(one UNet per size, so every objective steps the same network), with its ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from ignite.engine import Engine

from tskd_components.synthesis import DiffusionStep, EMAWeights, build_unet, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--preset", default="cpu", choices=["cpu", "gpu"], help="network settings of the bundle's train.json (+ gpu.json)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--objectives", nargs="+", default=["epsilon:0"], help="prediction_type:snr_gamma training objectives")
    args = parser.parse_args()
    configs = Path(__file__).resolve().parents[1] / "bundles" / "tskd_synthesis" / "configs"
    config = json.loads((configs / "train.json").read_text()) | (json.loads((configs / "gpu.json").read_text()) if args.preset == "gpu" else {})
    network = {k: config[k] for k in ("block_out_channels", "layers_per_block", "attention_levels")}
    device = torch.device(args.device)
    objectives = [(kind, float(gamma)) for kind, gamma in (o.split(":") for o in args.objectives)]
    schedulers = [DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=kind) for kind, _ in objectives]
    scheduler = schedulers[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, batch {args.batch_size}, DDIM {args.ddim_steps} steps, "
          f"UNet {network}")
    base = None
    for size in args.sizes:
        torch.manual_seed(0)
        unet = build_unet(size, 1, **network).to(device)
        ema = EMAWeights(unet)
        optimizer = torch.optim.AdamW(unet.parameters(), 2e-4)
        engines = []
        for sched, (_, gamma) in zip(schedulers, objectives):
            engine = Engine(DiffusionStep(sched, ema, snr_gamma=gamma))
            engine.network, engine.optimizer, engine.state.device = unet, optimizer, device
            engines.append(engine)
        batch = {"image": torch.rand(args.batch_size, 1, size, size) * 2 - 1}
        times = [[] for _ in engines]
        for _ in range(args.steps + 1):
            for engine, timed in zip(engines, times):
                start = time.perf_counter()
                engine._process_function(engine, batch)
                synchronize(device)
                timed.append(time.perf_counter() - start)
        steps = [statistics.median(timed[1:]) for timed in times]
        step = steps[0]
        for (kind, gamma), t in list(zip(objectives, steps))[1:]:
            print(f"{size:4d} px: {kind}, snr_gamma {gamma:g}: {t:6.3f} s per training step against {step:6.3f} s for "
                  f"{objectives[0][0]}, snr_gamma {objectives[0][1]:g} (x{t / step:.3f})")
        start = time.perf_counter()
        sample(unet, scheduler.config, 4, steps=args.ddim_steps, batch_size=4, device=device)
        per_image = (time.perf_counter() - start) / 4
        base = base or (step, per_image)
        print(f"{size:4d} px: {step:6.2f} s per training step (x{step / base[0]:.1f}), {per_image:6.2f} s per sampled image (x{per_image / base[1]:.1f}); "
              f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
