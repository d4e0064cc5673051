"""int8 against fp32 ONNX for a student trained by `tskd experiment`: test-split Dice of both and their latency.

The fine-tune stage's weights go into a copy of the student bundle built as they were trained (student, decoder,
size and classes from the run's resolved config), which is exported to ONNX (`export_with_parity`) and quantized
(`quantize_int8`: static QDQ, calibrated on training images), as `tskd export <stage> <folder> --int8` does, with
the quantizer's settings exposed and the report printed in the form of the committed result files. Both models run
in this process on the same inputs, so the speed-up is a ratio measured side by side. Usage (2 CPU cores, nothing
else running):

    python benchmarks/int8_parity.py runs/student_256/hc18/finetune/ts_kd_n20_s0 --threads 2 \
        --out docs/results/student_variants/int8_256px_hc18.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from tskd_components.deploy import export_stage
from tskd_components.utils.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", type=Path, help="a fine-tune stage folder (models/model.pt, run/config.resolved.json)")
    parser.add_argument("--calibration", type=int, default=32, help="training images that calibrate the activations")
    parser.add_argument("--repeats", type=int, default=5, help="runs per round (each round times fp32 then int8)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-spinning", action="store_true", help="idle ONNX Runtime worker threads sleep instead of spin-waiting")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_stage(args.stage, tmp, int8=True, num_calibration=args.calibration, repeats=args.repeats, rounds=args.rounds,
                                threads=args.threads, spinning=not args.no_spinning)
    report = {"stage": exported["stage"], "student": exported["student"], "onnx_max_abs_diff": exported["onnx_max_abs_diff"], **exported["int8"]}
    print(json.dumps(report, indent=1))
    if args.out:
        write_json(args.out, report, indent=1)


if __name__ == "__main__":
    main()
