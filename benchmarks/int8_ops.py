"""Which ops to quantize: ONNX Runtime latency of each student decoder in fp32 and int8 with different sets
of quantized ops and both formats, in one process, with the per-op time of fp32, ours and ONNX Runtime's default,
and Amdahl's ceiling on fp32 / int8 from those profiles (:func:`int8_ceiling`).

    python benchmarks/int8_ops.py [--image-size 256] [--rounds 3] [--repeats 30] [--threads 2] [--batch-size 1] [--decoders light]

Random weights, calibrated on 16 images of the in-repo HC18 sample; each model is exported at a fixed batch size
(``--batch-size``: 1 is an interactive request, 8 a folder of images at once), latencies are per image.
Each latency is the median of ``--rounds`` interleaved rounds (each the median of ``--repeats`` runs), so drifting
background load hits every model alike; ``fp32 / this`` is the median of the rounds' ratios (``paired_speedup``).
On a 2-vCPU VM the speed of two spinning threads can sit at one of two levels for seconds to minutes (the Zen 4 VM of
2026-12-05: fp32 light student 25 or 36.5 ms, switching also within one process, no steal time reported; one thread
steady at 44 ms), and int8 suffers more in the slow one: read the rounds, and rerun when they disagree. The per-op
profiles (and so the ceiling) are single unpaired runs and do not have that protection.
``argmax agreement`` is the share of pixels whose class matches the fp32 model's on a held-out image.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import QuantFormat

from tskd_components.data import load_transfer_set, preprocessing, sample_dataset_dir
from tskd_components.networks import create_student
from tskd_components.networks.decoders import DECODERS
from tskd_components.quantize import QUANTIZED_OPS, latency_rounds, paired_speedup, quantize_onnx, session

CHOICES = {
    "every op (ORT default), QDQ": dict(op_types=None, extra_options={}),
    "Conv+Gemm+MatMul, QDQ": dict(op_types=("Conv", "Gemm", "MatMul")),
    "Conv+Gemm, QDQ, Gemm outputs uint8": dict(op_types=QUANTIZED_OPS, extra_options={}),
    "Conv+Gemm, QDQ, Gemm outputs fp32 (ours)": dict(op_types=QUANTIZED_OPS),
    "Conv+Gemm, QOperator": dict(op_types=QUANTIZED_OPS, quant_format=QuantFormat.QOperator),
}


# fp32 op types -> the int8 kernels ONNX Runtime runs for them once quantized (the QDQ pairs around them fused away).
INT8_KERNELS = {("Gemm",): ("QGemm",), ("Conv",): ("QLinearConv",), ("MatMul", "FusedMatMul"): ("QLinearMatMul",)}


def op_times(path: Path, x: np.ndarray, runs: int = 10) -> list[tuple[str, float]]:
    """Mean ms per run (one batch) spent in each op type (ONNX Runtime's profiler), every op type, largest first."""
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    model = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        model.run(None, {model.get_inputs()[0].name: x})
    events = json.loads(Path(model.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return total.most_common()


def int8_ceiling(fp32: list[tuple[str, float]], int8: list[tuple[str, float]]) -> float:
    """Amdahl's bound on fp32 / int8 from two profiles: the speed-up if each group of :data:`INT8_KERNELS` that is
    faster in int8 ran at its int8 kernels' measured time and everything else cost what it costs in fp32 (no
    QuantizeLinear / DequantizeLinear, no slower op kept quantized)."""
    before, after = dict(fp32), dict(int8)
    saved = sum(max(0.0, sum(before.get(op, 0.0) for op in ops) - sum(after[k] for k in kernels))
                for ops, kernels in INT8_KERNELS.items() if all(k in after for k in kernels))
    total = sum(before.values())
    return total / (total - saved)


def measure(decoder: str, args: argparse.Namespace) -> None:
    """Export the ViT-Tiny student with ``decoder``, quantize it each way of :data:`CHOICES`, print the latencies
    (interleaved rounds), argmax agreement, per-op profiles and Amdahl's ceiling."""
    torch.manual_seed(0)
    b = args.batch_size
    pre = preprocessing(args.image_size, channels=3, with_label=False)
    images = [pre(dict(item))["image"].numpy()[None] for item in load_transfer_set(sample_dataset_dir())[:16 + b]]
    calibration = [np.concatenate(images[i:i + b]) for i in range(0, 16 - b + 1, b)]
    x = np.concatenate(images[16:])
    with tempfile.TemporaryDirectory() as tmp:
        model = create_student("vit_tiny", image_size=args.image_size, num_classes=2, decoder=decoder).eval()
        files = {"fp32": Path(tmp) / f"{decoder}.onnx"}
        torch.onnx.export(model, (torch.as_tensor(x),), str(files["fp32"]), input_names=["image"], output_names=["logits"])
        for i, (name, kwargs) in enumerate(CHOICES.items()):
            files[name] = quantize_onnx(files["fp32"], Path(tmp) / f"{decoder}_int8_{i}.onnx", calibration, **kwargs)
        sessions = {name: session(path, args.threads) for name, path in files.items()}
        rounds = {name: [ms / b for ms in times] for name, times in latency_rounds(sessions, x, args.repeats, args.rounds).items()}
        reference = sessions["fp32"].run(None, {"image": x})[0].argmax(1)
        print(f"ViT-Tiny + {decoder} decoder:")
        for name, times in rounds.items():
            agreement = float((sessions[name].run(None, {"image": x})[0].argmax(1) == reference).mean())
            print(f"  {name:40s} {statistics.median(times):6.1f} ms/image  (rounds {', '.join(f'{t:.1f}' for t in times)})  "
                  f"fp32 / this x{paired_speedup(rounds['fp32'], times):.2f}  argmax agreement {agreement:.4f}")
        profiles = {name: op_times(files[name], x) for name in ("fp32", "Conv+Gemm, QDQ, Gemm outputs fp32 (ours)", "every op (ORT default), QDQ")}
        for name, profile in profiles.items():
            print(f"  time per op type, {name}: total {sum(ms for _, ms in profile) / b:.1f} ms; "
                  + ", ".join(f"{op} {ms / b:.1f} ms" for op, ms in profile[:6]))
        print(f"  ceiling (Amdahl; quantized ops at their int8 kernels' times, every other op and no Q/DQ cost at fp32's): "
              f"x{int8_ceiling(profiles['fp32'], profiles['every op (ORT default), QDQ']):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per physical core)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per run (1 to 8); latencies are per image")
    parser.add_argument("--decoders", nargs="+", choices=sorted(DECODERS), default=list(DECODERS), help="student decoders to measure")
    args = parser.parse_args()
    if not 1 <= args.batch_size <= 8:
        parser.error("--batch-size must be 1 to 8 (16 calibration and 8 held-out images of the in-repo sample)")
    print(f"onnxruntime {onnxruntime.__version__}, CPU, batch {args.batch_size}, {args.image_size} px, {args.threads or 'default'} threads",
          flush=True)
    for decoder in args.decoders:
        measure(decoder, args)


if __name__ == "__main__":
    main()
