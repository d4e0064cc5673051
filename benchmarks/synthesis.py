"""Seconds per diffusion training step and per sampled image (DDIM) at 64 and 128 px on this machine.

    python benchmarks/synthesis.py [--sizes 64 128] [--batch-size 8] [--ddim-steps 50]

Uses the bundle's default UNet (channels 32/64/128/128, attention at the third level) on random inputs (the
cost does not depend on the data) and prints the ratio of each size to the first.
"""

from __future__ import annotations

import argparse
import statistics
import time

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
    args = parser.parse_args()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, DDIM {args.ddim_steps} steps")
    base = None
    for size in args.sizes:
        torch.manual_seed(0)
        unet = build_unet(size, 1)
        engine = Engine(DiffusionStep(scheduler, EMAWeights(unet)))
        engine.network, engine.optimizer = unet, torch.optim.AdamW(unet.parameters(), 2e-4)
        engine.state.device = torch.device("cpu")
        batch = {"image": torch.rand(args.batch_size, 1, size, size) * 2 - 1}
        times = []
        for _ in range(args.steps + 1):
            start = time.perf_counter()
            engine._process_function(engine, batch)
            times.append(time.perf_counter() - start)
        step = statistics.median(times[1:])
        start = time.perf_counter()
        sample(unet, scheduler.config, 4, steps=args.ddim_steps, batch_size=4)
        per_image = (time.perf_counter() - start) / 4
        base = base or (step, per_image)
        print(f"{size:4d} px: {step:6.2f} s per training step (x{step / base[0]:.1f}), {per_image:6.2f} s per sampled image (x{per_image / base[1]:.1f}); "
              f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
