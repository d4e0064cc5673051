"""CPU inference throughput: each student variant (ViT-Tiny with each decoder) against the SAM teacher at the same
size and at 1024 px and against the UNet reference, all in one process; and the end-to-end pipeline time.

    python benchmarks/throughput.py [--image-size 256] [--teacher vit_b] [--batch 4] [--device cpu] [--pipeline]

Random weights (speed does not depend on them). Prints images/s of the student and of the teacher at the same
resolution (goal: student >= 10x) and of the teacher at SAM's native 1024 px (goal: >= 100x), each ratio taken
in this process. ``--pipeline`` also times ``tskd pipeline`` (the README's default job) in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.networks.nets import BasicUNet

from tskd_components.networks import build_prompt_free_sam, create_student, list_students
from tskd_components.networks.decoders import DECODERS
from tskd_components.pipeline.experiment import UNET_FEATURES
from tskd_components.utils.profiling import model_cost


def images_per_second(model: torch.nn.Module, image_size: int, batch: int, repeats: int, device: str) -> tuple[float, dict]:
    cost = model_cost(model, image_size, batch_size=batch, repeats=repeats, device=device)
    return batch / (cost["latency_ms"] / 1000), cost


def onnx_latencies(model: torch.nn.Module, image_size: int, repeats: int) -> tuple[float, float, float]:
    """Median batch-1 latency (ms) of ``model`` exported to ONNX, in fp32 and statically quantized to int8
    (calibrated on the in-repo HC18 sample's training images), over 15 interleaved rounds, and fp32 / int8 (the
    median of the rounds' ratios)."""
    from tskd_components.data import (
        load_transfer_set,
        preprocessing,
        sample_dataset_dir,
    )
    from tskd_components.quantize import latency_rounds, paired_speedup, quantize_onnx, session

    pre = preprocessing(image_size, channels=3, with_label=False)
    calibration = [pre(dict(item))["image"].numpy()[None] for item in load_transfer_set(sample_dataset_dir())[:16]]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "student.onnx"
        torch.onnx.export(model.eval(), (torch.as_tensor(calibration[0]),), str(fp32), input_names=["image"], output_names=["logits"])
        int8 = quantize_onnx(fp32, Path(tmp) / "student_int8.onnx", calibration)
        rounds = latency_rounds({"fp32": session(fp32), "int8": session(int8)}, calibration[0], repeats, rounds=15)
        return statistics.median(rounds["fp32"]), statistics.median(rounds["int8"]), paired_speedup(rounds["fp32"], rounds["int8"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--teacher", default="vit_b")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--onnx", action="store_true", help="also fp32 vs int8 ONNX Runtime latency per student variant (batch 1)")
    args = parser.parse_args()
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, batch {args.batch}")
    teacher = build_prompt_free_sam(args.teacher, 2, args.image_size, random_init=True)
    same, t_cost = images_per_second(teacher, args.image_size, args.batch, args.repeats, args.device)
    print(f"teacher SAM {args.teacher:6s} {args.image_size:5d} px: {same:8.2f} img/s  ({t_cost['params_m']:.1f} M params, {t_cost['gflops']:.2f} GFLOPs)")
    native = build_prompt_free_sam(args.teacher, 2, 1024, random_init=True)
    full, n_cost = images_per_second(native, 1024, 1, max(1, args.repeats - 1), args.device)
    print(f"teacher SAM {args.teacher:6s}  1024 px: {full:8.3f} img/s  ({n_cost['gflops']:.1f} GFLOPs)")
    unet, u_cost = images_per_second(BasicUNet(2, 3, 2, features=UNET_FEATURES), args.image_size, args.batch, args.repeats, args.device)
    print(f"UNet reference     {args.image_size:5d} px: {unet:8.2f} img/s  ({u_cost['params_m']:.2f} M params, {u_cost['gflops']:.2f} GFLOPs)")
    variants = [("vit_tiny", decoder) for decoder in DECODERS] + [(name, "light") for name in list_students() if name != "vit_tiny"]
    for student_name, decoder in variants:
        model = create_student(student_name, image_size=args.image_size, num_classes=2, decoder=decoder)
        student, s_cost = images_per_second(model, args.image_size, args.batch, args.repeats, args.device)
        decoder_gflops = s_cost["gflops"] - model_cost(model.encoder, args.image_size, repeats=1)["gflops"]
        print(f"student {student_name} + {decoder} decoder {args.image_size} px: {student:8.2f} img/s ({s_cost['params_m']:.2f} M params, "
              f"{s_cost['gflops']:.2f} GFLOPs, decoder {decoder_gflops:.2f}) -> x{student / same:.1f} SAM {args.teacher} at {args.image_size} px "
              f"(goal >= 10), x{student / full:.0f} at 1024 px, x{student / unet:.1f} the UNet")
        if args.onnx:
            fp32_ms, int8_ms, speedup = onnx_latencies(model, args.image_size, args.repeats)
            print(f"    ONNX Runtime batch 1: fp32 {fp32_ms:.1f} ms, int8 {int8_ms:.1f} ms -> int8 x{speedup:.2f} (goal >= 1.5)")
    if args.pipeline:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tskd_components", "pipeline", "--run-dir", tmp], check=True, stdout=subprocess.DEVNULL)
            print(f"tskd pipeline (default job, end to end): {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
