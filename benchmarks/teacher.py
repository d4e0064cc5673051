"""Teacher figures: trainable-parameter fraction of LoRA-SAM and forward time on this machine.

    python benchmarks/teacher.py [--variant vit_b] [--rank 4] [--sizes 256 1024] [--repeats 3]

Prints the trainable fraction for both decoder modes, and the median forward time of the LoRA-SAM teacher
(random weights: timing does not depend on them) at each input size, as a ratio against 256 px.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tskd_components.networks import build_lora_sam


def forward_seconds(model: torch.nn.Module, size: int, repeats: int) -> float:
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for mode in ("lora", "full"):
        counts = build_lora_sam(args.variant, 2, 256, random_init=True, lora_rank=args.rank, decoder_mode=mode).parameter_counts()
        print(f"{args.variant} LoRA r={args.rank} on qkv, decoder {mode:4s}: {counts['trainable']:>9,} trainable / {counts['total']:,} = {100 * counts['fraction']:.3f} %")
    base = None
    for size in args.sizes:
        model = build_lora_sam(args.variant, 2, size, random_init=True, lora_rank=args.rank).eval()
        seconds = forward_seconds(model, size, args.repeats)
        base = base or seconds
        print(f"{args.variant} forward (batch 1) at {size:4d} px: {seconds:7.2f} s  (x{seconds / base:.1f} vs {args.sizes[0]} px)")


if __name__ == "__main__":
    main()
