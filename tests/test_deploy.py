"""Export of a trained student bundle (TorchScript + ONNX via monai.bundle) with output parity."""

import json
import shutil

import pytest
from monai.bundle import verify_net_in_out

from tests.bundles.conftest import BUNDLES, run_bundle
from tests.conftest import SAMPLE
from tskd_components.deploy import export_with_parity


def test_export_matches_pytorch(tmp_path):
    root = tmp_path / "tskd_student_segmentation"
    shutil.copytree(BUNDLES / "tskd_student_segmentation" / "configs", root / "configs")
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for tensor in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
        tensor["spatial_shape"] = [64, 64]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="train the bundle before exporting"):
        export_with_parity(root)
    run_bundle("tskd_student_segmentation", "train.json", bundle_root=str(root), dataset_dir=str(SAMPLE), num_labeled=4, max_epochs=1,
               image_size=64, batch_size=4)
    report = export_with_parity(root, batch_size=2)
    assert report["input_shape"] == [2, 3, 64, 64]
    assert report["torchscript_max_abs_diff"] <= 1e-4 and report["onnx_max_abs_diff"] <= 1e-4
    assert (root / "models" / "model.ts").is_file() and (root / "models" / "model.onnx").is_file()


def test_verify_net_in_out_passes_for_the_student_bundle():
    configs = BUNDLES / "tskd_student_segmentation" / "configs"
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"))
