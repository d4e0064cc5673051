"""int8 against fp32 ONNX for a student trained by `tskd experiment`: test-split Dice of both and their latency.

The fine-tune stage's weights go into a copy of the student bundle built as they were trained (student, decoder,
size and classes from the run's resolved config), which is exported to ONNX (`export_with_parity`) and quantized
(`quantize_int8`: static QDQ, calibrated on training images). Both models run in this process on the same inputs,
so the speed-up is a ratio measured side by side. Usage (2 CPU cores, nothing else running):

    python benchmarks/int8_parity.py runs/student_256/hc18/finetune/ts_kd_n20_s0 --threads 2 \
        --out docs/results/student_variants/int8_256px_hc18.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from tskd_components.data import read_dataset_info
from tskd_components.deploy import export_with_parity, write_input_size
from tskd_components.networks import trained_decoder
from tskd_components.pipeline.stages import bundles_dir
from tskd_components.quantize import quantize_int8
from tskd_components.utils.io import write_json
from tskd_components.utils.weights import read_state_dict


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
    config = json.loads((args.stage / "run" / "config.resolved.json").read_text())
    config["decoder"] = config.get("decoder") or trained_decoder(read_state_dict(args.stage / "models" / "model.pt"))  # older runs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tskd_student_segmentation"
        shutil.copytree(bundles_dir() / "tskd_student_segmentation", root, ignore=shutil.ignore_patterns("models", "runs", "eval"))
        (root / "models").mkdir()
        shutil.copy(args.stage / "models" / "model.pt", root / "models" / "model.pt")
        inference = json.loads((root / "configs" / "inference.json").read_text())
        write_json(root / "configs" / "inference.json", inference | {k: config[k] for k in ("student_name", "decoder") if config.get(k)}, indent=4)
        write_input_size(root / "configs", int(config["image_size"]), int(config["in_channels"]), read_dataset_info(config["dataset_dir"]).classes)
        parity = export_with_parity(root)
        report = quantize_int8(root, config["dataset_dir"], num_calibration=args.calibration, repeats=args.repeats, rounds=args.rounds,
                               threads=args.threads, spinning=not args.no_spinning)
    report = {"stage": str(args.stage), "student": f"{config['student_name']} + {config['decoder']}",
              "onnx_max_abs_diff": parity["onnx_max_abs_diff"], **report}
    print(json.dumps(report, indent=1))
    if args.out:
        write_json(args.out, report, indent=1)


if __name__ == "__main__":
    main()
