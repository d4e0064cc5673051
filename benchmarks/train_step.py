"""The compute floor of a training step: time of one optimizer step (forward, backward, AdamW) of the LoRA-SAM teacher
and of each student decoder on random data, as the bundles train them (fp32), in one process.

    python benchmarks/train_step.py [--device cuda] [--image-size 256] [--batch 8] [--steps 20]

Set beside a stage's measured seconds per step (its log), the ratio says how much of a step is the model and how much
is everything around it (data loading, handlers, validation, checkpoints). Random weights: timing does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import torch

from tskd_components.networks import build_lora_sam, create_student
from tskd_components.networks.decoders import DECODERS


def step_ms(model: torch.nn.Module, size: int, batch: int, steps: int, device: torch.device) -> float:
    """Median ms of one optimizer step of ``model`` (B, 3, size, size) -> (B, 2, size, size) logits, cross-entropy."""
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch, size, size), device=device)
    times = []
    for i in range(steps + 3):  # 3 warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--teacher", default="vit_b")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, batch {args.batch}, {args.image_size} px, fp32, median of {args.steps} steps")
    models = {f"LoRA-SAM {args.teacher} (rank 4, decoder trained)": build_lora_sam(args.teacher, 2, args.image_size, random_init=True)}
    models.update({f"ViT-Tiny + {d} decoder": create_student("vit_tiny", image_size=args.image_size, num_classes=2, decoder=d) for d in DECODERS})
    base = None
    for label, model in models.items():
        ms = step_ms(model, args.image_size, args.batch, args.steps, device)
        base = base or ms
        print(f"  {label:40s} {ms:8.1f} ms per step   teacher / this x{base / ms:.2f}", flush=True)
        model.cpu()


if __name__ == "__main__":
    main()
