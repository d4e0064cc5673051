"""Profiling helpers: median wall time of a call and a model's cost (parameters, FLOPs, latency)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def median_seconds(fn: Callable[[], Any], repeats: int, device: torch.device | str = "cpu") -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run (CUDA work synchronised)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_cost(model: torch.nn.Module, image_size: int, batch_size: int = 1, repeats: int = 3,
               device: torch.device | str = "cpu") -> dict[str, float]:
    """Parameters (M), forward GFLOPs per image and median forward latency (ms) at ``batch_size`` on ``device``."""
    model = model.eval().to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x[:1])
        seconds = median_seconds(lambda: model(x), repeats, device)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "gflops": counter.get_total_flops() / 1e9,
            "latency_ms": 1000 * seconds, "batch_size": batch_size, "image_size": image_size}
