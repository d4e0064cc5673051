"""int8 ONNX of a trained student: static quantization calibrated on training images, Dice parity, latency."""

import json
import shutil

import onnx
import pytest

from tests.bundles.conftest import BUNDLES, run_bundle
from tests.conftest import SAMPLE
from tskd_components.deploy import export_with_parity, write_input_size
from tskd_components.quantize import INT8_FILE, INT8_REPORT, paired_speedup, quantize_int8


def test_int8_student_keeps_its_dice_and_holds_int8_weights(tmp_path):
    root = tmp_path / "tskd_student_segmentation"
    shutil.copytree(BUNDLES / "tskd_student_segmentation", root, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    with pytest.raises(FileNotFoundError, match="export the bundle first"):
        quantize_int8(root, SAMPLE)
    run_bundle("tskd_student_segmentation", "train.json", bundle_root=str(root), dataset_dir=str(SAMPLE), num_labeled=8, max_epochs=6,
               image_size=64, batch_size=4, **{"network_def#depth": 4})
    write_input_size(root / "configs", 64, 3, {0: "background", 1: "fetal head"})
    inference = json.loads((root / "configs" / "inference.json").read_text())
    inference["network_def"]["depth"] = 4
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    export_with_parity(root)
    report = quantize_int8(root, SAMPLE, num_calibration=8, repeats=3)
    assert report == json.loads((root / "models" / INT8_REPORT).read_text())
    assert report["test_images"] == len(json.loads((SAMPLE / "split.json").read_text())["test"]) and report["calibration_images"] == 8
    assert abs(report["dice_difference"]) <= 0.02, report
    assert report["size_mb_int8"] < 0.5 * report["size_mb_fp32"]
    graph = onnx.load(str(root / "models" / INT8_FILE)).graph
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)  # weights stored as int8
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 10


def test_speedup_pairs_the_rounds():
    # three rounds whose fp32 / int8 ratios are 2, 1 and 4: the median of the ratios is 2, where the ratio of the
    # medians (30 / 10) would read 3
    assert paired_speedup([10.0, 30.0, 40.0], [5.0, 30.0, 10.0]) == 2.0
