"""int8 student: ONNX Runtime static quantization of an exported student bundle, calibrated on training images, with a
test-split Dice parity check and latency against the fp32 ONNX model (both measured in this process)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnxruntime
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from .data import load_datalist, load_transfer_set, preprocessing, read_dataset_info
from .utils.io import atomic_path, atomic_write, write_json

INT8_FILE = "model_int8.onnx"
INT8_REPORT = "int8_report.json"


class ImageReader(CalibrationDataReader):
    """Preprocessed images, one (1, C, S, S) array at a time, under the ONNX model's input name."""

    def __init__(self, input_name: str, images: list[np.ndarray]) -> None:
        self.input_name, self._images = input_name, images
        self._it: Iterator[np.ndarray] = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._it, None)
        return None if image is None else {self.input_name: image}

    def rewind(self) -> None:
        self._it = iter(self._images)


def session(path: Path, threads: int = 0, spinning: bool = True) -> onnxruntime.InferenceSession:
    """A CPU ONNX Runtime session of ``path`` with ``threads`` intra-op threads (0: ONNX Runtime's default, one per
    physical core). ``spinning=False`` lets idle worker threads sleep instead of spin-waiting (ONNX Runtime's
    ``session.intra_op.allow_spinning``): on a 2-vCPU VM the spinning default ran the light student's fp32 model at
    25 or 36.5 ms depending on the VM's state, without spinning at a steady 27-28 ms (2026-12-05)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# Quantized by default: the convolutions and the linear layers (Gemm after ONNX Runtime's fusions). On 2 AVX2 cores
# without VNNI (benchmarks/int8_ops.py) quantizing every op ONNX Runtime can (its default) also turns the attention
# softmax into QLinearSoftmax (5.6 ms against 0.7 ms for the fp32 Softmax) and moves the masks further from fp32's;
# end to end, no choice of ops was faster than the others beyond the machine's run-to-run noise, and none reached 1.5x.
QUANTIZED_OPS = ("Conv", "Gemm")

# The Gemm outputs stay fp32 (QGemm writes them directly) rather than being requantized to uint8 and dequantized again
# for the LayerNorm / GELU / attention that read them: fp32 / int8 1.57-1.62x against 1.52x for the light student and
# 1.50-1.56x against 1.46-1.54x for UNETR in two runs, same pixel agreement (2 cores with AVX-512 VNNI, paired rounds,
# benchmarks/int8_ops.py, 2026-12-05; docs/results/student_variants).
EXTRA_OPTIONS = {"OpTypesToExcludeOutputQuantization": ["Gemm"]}


def quantize_onnx(fp32: str | Path, int8: str | Path, calibration: list[np.ndarray], op_types: tuple[str, ...] | None = QUANTIZED_OPS,
                  quant_format: QuantFormat = QuantFormat.QDQ, extra_options: dict[str, Any] | None = EXTRA_OPTIONS) -> Path:
    """Static int8 quantization of the ONNX model ``fp32`` into ``int8`` (per-channel int8 weights, uint8 activations
    whose ranges come from running ``calibration`` inputs) of the ``op_types`` nodes (``None``: every op ONNX Runtime
    can quantize), in ``quant_format`` with ONNX Runtime's ``extra_options`` (default :data:`EXTRA_OPTIONS`), written
    atomically."""
    int8 = Path(int8)
    prepared = atomic_path(int8.with_name(int8.stem + "_prep.onnx"))  # scratch: the pre-processed fp32 model
    try:
        with atomic_write(int8) as out:
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(out), ImageReader(session(Path(fp32)).get_inputs()[0].name, calibration),
                            quant_format=quant_format, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(op_types) if op_types else None, extra_options=dict(extra_options or {}))
    finally:
        prepared.unlink(missing_ok=True)
    return int8


def median_ms(model: onnxruntime.InferenceSession, x: np.ndarray, repeats: int) -> float:
    """Median latency (ms) of ``model`` on input ``x`` over ``repeats`` runs after one warm-up."""
    name = model.get_inputs()[0].name
    model.run(None, {name: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(None, {name: x})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def latency_rounds(models: dict[str, onnxruntime.InferenceSession], x: np.ndarray, repeats: int, rounds: int = 3) -> dict[str, list[float]]:
    """Per model, the :func:`median_ms` of each of ``rounds`` rounds; every round runs every model in turn, so that
    drifting background load hits all models alike (compare them round by round: :func:`paired_speedup`)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(median_ms(model, x, repeats))
    return times


def paired_speedup(base: list[float], other: list[float]) -> float:
    """Median over rounds of ``base / other`` (two models' :func:`latency_rounds`): each ratio is taken between runs
    a fraction of a second apart, so a machine whose speed shifts between levels (a 2-vCPU VM's second thread) does not
    set one model's median in one level and the other's in the other."""
    return statistics.median(b / o for b, o in zip(base, other))


def _dice(model: onnxruntime.InferenceSession, images: list[np.ndarray], labels: list[torch.Tensor], num_classes: int) -> float:
    """Mean foreground Dice of the session's argmax predictions at the model's input size."""
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    name = model.get_inputs()[0].name
    for image, label in zip(images, labels):
        pred = torch.as_tensor(model.run(None, {name: image})[0]).argmax(1, keepdim=True)
        metric(one_hot(pred, num_classes), one_hot(label[None].long(), num_classes))
    return float(metric.aggregate())


def quantize_int8(bundle_root: str | Path, dataset_dir: str | Path, num_calibration: int = 32, repeats: int = 5, rounds: int = 15,
                  threads: int = 0, spinning: bool = True) -> dict[str, Any]:
    """``models/model.onnx`` of a student bundle (see :func:`tskd_components.deploy.export_with_parity`) ->
    ``models/model_int8.onnx`` (QDQ, :data:`QUANTIZED_OPS` with fp32 Gemm outputs, per-channel int8 weights and uint8 activations
    calibrated on the first ``num_calibration`` training images of ``dataset_dir``); then Dice of both models on its test split and the
    latency of each at batch 1 over ``rounds`` interleaved rounds of ``repeats`` runs (``threads`` intra-op threads, 0: one
    per physical core; ``spinning`` as in :func:`session`), the speed-up by :func:`paired_speedup`. Writes and returns ``models/int8_report.json``."""
    models = Path(bundle_root) / "models"
    fp32 = models / "model.onnx"
    if not fp32.is_file():
        raise FileNotFoundError(f"{fp32} not found; export the bundle first (tskd_components.deploy.export_with_parity)")
    inference = json.loads((Path(bundle_root) / "configs" / "inference.json").read_text())
    size, channels = int(inference["image_size"]), int(inference["in_channels"])
    num_classes = read_dataset_info(dataset_dir).num_classes
    unlabeled = preprocessing(size, channels=channels, with_label=False)
    calibration = [unlabeled(dict(item))["image"].numpy()[None].astype(np.float32) for item in load_transfer_set(dataset_dir)[:num_calibration]]
    labeled = preprocessing(size, num_classes=num_classes, channels=channels)
    test = [labeled(dict(item)) for item in load_datalist(dataset_dir, "test")]
    images = [t["image"].numpy()[None].astype(np.float32) for t in test]
    labels = [torch.as_tensor(t["label"]) for t in test]

    quantize_onnx(fp32, models / INT8_FILE, calibration)
    sessions = {"fp32": session(fp32, threads, spinning), "int8": session(models / INT8_FILE, threads, spinning)}
    dice = {k: _dice(run, images, labels, num_classes) for k, run in sessions.items()}
    times = latency_rounds(sessions, images[0], repeats, rounds)
    latency = {k: statistics.median(v) for k, v in times.items()}
    report = {"calibration_images": len(calibration), "test_images": len(images), "image_size": size,
              "dice_fp32": dice["fp32"], "dice_int8": dice["int8"], "dice_difference": dice["int8"] - dice["fp32"],
              "latency_ms_fp32": latency["fp32"], "latency_ms_int8": latency["int8"], "speedup": paired_speedup(times["fp32"], times["int8"]),
              "rounds": rounds, "repeats": repeats,
              "size_mb_fp32": fp32.stat().st_size / 1e6, "size_mb_int8": (models / INT8_FILE).stat().st_size / 1e6,
              "threads": threads or "one per physical core", "spinning": spinning, "onnxruntime": onnxruntime.__version__}
    write_json(models / INT8_REPORT, report)
    return report
