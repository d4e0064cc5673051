"""Model cost (parameters, FLOPs, CPU latency) and per-stage training time of a run."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.networks.nets import BasicUNet

from ..networks import build_prompt_free_sam, create_student
from ..utils.profiling import model_cost
from .experiment import UNET_FEATURES
from .stages import STAGE_RECORD


def efficiency_rows(image_size: int, num_classes: int, sam_variant: str, students: Sequence[str] = ("vit_tiny + light",),
                    repeats: int = 3) -> list[dict[str, Any]]:
    """Cost of each student (``"<registered student> + <decoder>"``, as ``results.csv`` names it), the UNet reference
    and the teacher architecture, all at ``image_size`` (random weights: cost does not depend on them)."""
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {}
    for student in students:
        name, decoder = student.split(" + ")
        models[f"{student} student"] = create_student(name, decoder=decoder, image_size=image_size, in_channels=3, num_classes=num_classes)
    models["BasicUNet reference"] = BasicUNet(2, 3, num_classes, features=UNET_FEATURES)
    models[f"SAM {sam_variant} teacher"] = build_prompt_free_sam(sam_variant, num_classes, image_size, random_init=True)
    if sam_variant != "vit_b":
        models["SAM vit_b (the paper's teacher)"] = build_prompt_free_sam("vit_b", num_classes, image_size, random_init=True)
    return [{"model": name, **model_cost(model, image_size, repeats=repeats)} for name, model in models.items()]


def stage_seconds(run_dir: str | Path) -> list[dict[str, Any]]:
    """Mean / total wall seconds per stage kind (e.g. ``teacher``, ``ts_kd distillation``, ``fine-tune ts_kd``) from the
    ``stage.json`` records under ``run_dir``, and the mean CPU seconds of the process over the records that have them
    (wall time includes any time the run was paused or shared the cores; CPU time does not)."""
    kinds: dict[str, list[dict]] = defaultdict(list)
    for path in Path(run_dir).rglob(STAGE_RECORD):
        rec = json.loads(path.read_text())
        kinds[rec["kind"]].append(rec)
    rows = []
    for kind, recs in sorted(kinds.items()):
        wall, cpu = [float(r["seconds"]) for r in recs], [float(r["cpu_seconds"]) for r in recs if "cpu_seconds" in r]
        rows.append({"stage": kind, "runs": len(recs), "mean_s": statistics.mean(wall), "total_s": sum(wall),
                     "cpu_runs": len(cpu), "cpu_mean_s": statistics.mean(cpu) if cpu else None})
    return rows


def efficiency_markdown(models: list[dict[str, Any]], stages: list[dict[str, Any]]) -> str:
    lines = ["| model | params (M) | GFLOPs / image | CPU latency, batch 1 (ms) |", "|---|---|---|---|"]
    lines += [f"| {m['model']} ({m['image_size']} px) | {m['params_m']:.2f} | {m['gflops']:.2f} | {m['latency_ms']:.1f} |" for m in models]
    lines += ["", "| stage | runs | mean wall (s) | total wall (s) | mean CPU (s) [runs with it] |", "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['runs']} | {s['mean_s']:.1f} | {s['total_s']:.1f} | "
              + (f"{s['cpu_mean_s']:.1f} [{s['cpu_runs']}]" if s["cpu_runs"] else "n/a") + " |" for s in stages]
    return "\n".join(lines) + "\n"
