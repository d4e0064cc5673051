"""CPU latency of the ViT-Tiny student: PyTorch vs TorchScript vs ONNX Runtime, at 256 px, batch 1 and 8.

    python benchmarks/student_runtime.py [--image-size 256] [--batches 1 8] [--repeats 10]

Random weights (latency does not depend on them); median of ``--repeats`` runs after one warm-up, and each
runtime's ratio to PyTorch in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime
import torch
from monai.networks.utils import convert_to_onnx, convert_to_torchscript

from tskd_components.networks import ViTSegmenter
from tskd_components.utils.profiling import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ViTSegmenter(args.image_size, 3, 2).eval()
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {torch.get_num_threads()} threads, {args.image_size} px")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            x = torch.randn(batch, 3, args.image_size, args.image_size)
            scripted = convert_to_torchscript(model, inputs=[x], use_trace=True)
            onnx_path = Path(tmp) / f"student_b{batch}.onnx"
            convert_to_onnx(model, inputs=[x], filename=str(onnx_path), use_trace=True)
            session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            with torch.inference_mode():
                eager = median_seconds(lambda: model(x), args.repeats)
                ts = median_seconds(lambda: scripted(x), args.repeats)
            ort = median_seconds(lambda: session.run(None, {name: x.numpy()}), args.repeats)
            print(f"batch {batch}: PyTorch {1000 * eager:7.1f} ms | TorchScript {1000 * ts:7.1f} ms (x{eager / ts:.2f} faster) | "
                  f"ONNX Runtime {1000 * ort:7.1f} ms (x{eager / ort:.2f} faster)")


if __name__ == "__main__":
    main()
