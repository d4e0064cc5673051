"""Export of a trained student bundle (TorchScript + ONNX via monai.bundle) with output parity."""

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import verify_net_in_out

from tests.bundles.conftest import BUNDLES, run_bundle
from tests.conftest import SAMPLE
from tskd_components.deploy import export_with_parity, package_bundle, write_input_size
from tskd_components.networks import ViTSegmenter


def test_export_matches_pytorch(tmp_path):
    root = tmp_path / "tskd_student_segmentation"
    shutil.copytree(BUNDLES / "tskd_student_segmentation" / "configs", root / "configs")
    write_input_size(root / "configs", 64, 3, {0: "background", 1: "fetal head"})
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


@pytest.fixture(scope="module")
def trained_student(tmp_path_factory) -> Path:
    """A copy of the student bundle trained for 1 epoch on 4 HC18 labels at 64 px and evaluated (bundle root)."""
    root = tmp_path_factory.mktemp("trained") / "tskd_student_segmentation"
    shutil.copytree(BUNDLES / "tskd_student_segmentation", root, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    args = dict(bundle_root=str(root), dataset_dir=str(SAMPLE), num_labeled=4, max_epochs=1, image_size=64, batch_size=4)
    run_bundle("tskd_student_segmentation", "train.json", **args)
    run_bundle("tskd_student_segmentation", "train.json", "evaluate.json", **args)  # eval_test/metrics.json
    return root


def test_zoo_package_round_trip(trained_student, tmp_path, monkeypatch):
    import torch
    from monai.bundle import download, load, verify_metadata

    root = trained_student
    archive = package_bundle(root, tmp_path / "dist", root / "runs" / "hc18_n4_s0", method="scratch")
    download(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), url=archive.as_uri())
    unpacked = json.loads((tmp_path / "zoo" / "tskd_student_segmentation" / "configs" / "metadata.json").read_text())
    assert unpacked["training"]["num_labeled"] == 4 and unpacked["training"]["dataset"] == "hc18"
    assert unpacked["network_data_format"]["inputs"]["image"]["spatial_shape"] == [64, 64]
    assert unpacked["network_data_format"]["outputs"]["pred"]["format"] == "segmentation"
    assert unpacked["eval_metrics"]["mean_dice"] == json.loads((root / "runs" / "hc18_n4_s0" / "eval_test" / "metrics.json").read_text())["metrics"]["mean_dice"]["mean"]
    license_text = (tmp_path / "zoo" / "tskd_student_segmentation" / "data_license.txt").read_text()
    assert "trained on hc18" in license_text and (SAMPLE / "PROVENANCE.md").read_text() in license_text
    verify_metadata(meta_file=str(tmp_path / "zoo" / "tskd_student_segmentation" / "configs" / "metadata.json"),
                    filepath=str(BUNDLES / "metadata_schema.json"))
    monkeypatch.syspath_prepend(str(tmp_path / "zoo" / "tskd_student_segmentation"))  # a zoo bundle's scripts/, as MONAI Label does
    loaded = load(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), workflow_type="inference", device="cpu")
    reference = ViTSegmenter(64, 3, 2)
    reference.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), reference.eval()(x))


def test_zoo_package_with_large_files_yml(trained_student, tmp_path):
    from monai.bundle import download, download_large_files

    from tskd_components.utils.weights import file_digest

    weights = trained_student / "models" / "model.pt"
    archive = package_bundle(trained_student, tmp_path / "dist", trained_student / "runs" / "hc18_n4_s0", method="scratch",
                             weights_url=weights.as_uri())
    download(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), url=archive.as_uri())
    unpacked = tmp_path / "zoo" / "tskd_student_segmentation"
    assert not (unpacked / "models" / "model.pt").exists() and file_digest(weights) in (unpacked / "large_files.yml").read_text()
    download_large_files(bundle_path=str(unpacked))
    assert file_digest(unpacked / "models" / "model.pt") == file_digest(weights)


def test_a_packaged_student_runs_inference_where_tskd_components_cannot_be_imported(trained_student, tmp_path):
    import subprocess
    import sys

    from monai.bundle import download

    archive = package_bundle(trained_student, tmp_path / "dist", trained_student / "runs" / "hc18_n4_s0", method="scratch")
    download(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), url=archive.as_uri())
    bundle = tmp_path / "zoo" / "tskd_student_segmentation"
    assert "tskd_components" not in (bundle / "configs" / "inference.json").read_text()
    images = SAMPLE / "images"
    run_bundle("tskd_student_segmentation", "inference.json", bundle_root=str(trained_student), input_dir=str(images),
               output_dir=str(tmp_path / "repo_out"), image_size=64)  # the unpackaged bundle, with tskd_components
    script = ("import sys; sys.modules['tskd_components'] = None  # importing it now fails\n"
              "from monai.bundle import run\n"
              f"run(config_file={str(bundle / 'configs' / 'inference.json')!r}, meta_file={str(bundle / 'configs' / 'metadata.json')!r}, "
              f"bundle_root={str(bundle)!r}, input_dir={str(images)!r}, output_dir={str(tmp_path / 'zoo_out')!r})\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=bundle, capture_output=True, text=True)  # zoo bundles run from their root
    assert done.returncode == 0, done.stderr[-3000:]
    masks = sorted(p.name for p in (tmp_path / "repo_out" / "masks").glob("*_seg.png"))
    assert len(masks) == len(list(images.iterdir())) and masks == sorted(p.name for p in (tmp_path / "zoo_out" / "masks").glob("*_seg.png"))
    for name in masks:
        a = next((tmp_path / "repo_out").rglob(name)).read_bytes()
        assert a == next((tmp_path / "zoo_out").rglob(name)).read_bytes(), name


def test_tskd_package_zips_a_fine_tune_stage(trained_student, tmp_path, capsys):
    from monai.bundle import download

    from tskd_components.pipeline.cli import main

    stage = tmp_path / "finetune" / "ts_kd_n4_s0"  # the layout of a `tskd experiment` fine-tune stage
    shutil.copytree(trained_student / "models", stage / "models")
    shutil.copytree(trained_student / "runs" / "hc18_n4_s0", stage / "run")
    (stage / "result.json").write_text(json.dumps({"method": "ts_kd", "teacher": "SAM standin [stand-in ...], LoRA r4"}))
    (stage / "stage.json").write_text(json.dumps({"overrides": {"decoder": "unetr", "num_labeled": 4}}))
    assert main(["package", str(stage), str(tmp_path / "dist")]) == 0
    archive = Path(capsys.readouterr().out.split("bundle: ")[1].strip())
    download(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), url=archive.as_uri())
    meta = json.loads((tmp_path / "zoo" / "tskd_student_segmentation" / "configs" / "metadata.json").read_text())
    assert meta["training"]["method"] == "ts_kd" and meta["training"]["teacher"].startswith("SAM standin")
    assert (tmp_path / "zoo" / "tskd_student_segmentation" / "scripts" / "student.py").is_file()
    assert main(["package", str(tmp_path / "finetune"), str(tmp_path / "dist")]) == 2  # not a stage: one clear line
    assert "is not a finished fine-tune stage" in capsys.readouterr().err
