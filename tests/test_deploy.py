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
    assert unpacked["student"]["token_grid"] == [4, 4] and unpacked["student"]["decoder"] == "light"  # as trained, not the 256 px default
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


BLOCKED = "import sys; sys.modules['tskd_components'] = None  # importing it now fails, as where the zoo's users run bundles\n"


def test_a_packaged_student_runs_where_tskd_components_cannot_be_imported(trained_student, tmp_path):
    """The issue's bar: package, then in a process without tskd_components: ``monai.bundle download`` (file URL), the
    weights through ``large_files.yml`` (as for a student over the zoo's 25 MB limit), ``inference.json`` on the
    shipped sample images and on a folder, to the unpackaged bundle's masks; then ``train.json`` fine-tunes it on a
    user's dataset."""
    import subprocess
    import sys

    from tskd_components.utils.weights import file_digest

    archive = package_bundle(trained_student, tmp_path / "dist", trained_student / "runs" / "hc18_n4_s0", method="scratch",
                             embed_limit_mb=0)
    hosted = tmp_path / "dist" / "tskd_student_segmentation_model.pt"
    assert file_digest(hosted) == file_digest(trained_student / "models" / "model.pt")
    images = SAMPLE / "images"
    run_bundle("tskd_student_segmentation", "inference.json", bundle_root=str(trained_student), input_dir=str(images),
               output_dir=str(tmp_path / "repo_out"), image_size=64)  # the unpackaged bundle, with tskd_components
    zoo, bundle = tmp_path / "zoo", tmp_path / "zoo" / "tskd_student_segmentation"
    script = BLOCKED + (
        "import os\nfrom monai.bundle import download, download_large_files, run\n"
        f"download(name='tskd_student_segmentation', bundle_dir={str(zoo)!r}, url={archive.as_uri()!r})\n"
        f"assert not os.path.exists({str(bundle / 'models' / 'model.pt')!r})  # the zip leaves the weights out\n"
        f"download_large_files(bundle_path={str(bundle)!r})\n"
        f"os.chdir({str(bundle)!r})  # zoo bundles with scripts/ run from their root\n"
        "run(config_file='configs/inference.json', meta_file='configs/metadata.json', bundle_root='.', "
        f"output_dir={str(tmp_path / 'zoo_sample')!r})\n"
        "run(config_file='configs/inference.json', meta_file='configs/metadata.json', bundle_root='.', "
        f"input_dir={str(images)!r}, output_dir={str(tmp_path / 'zoo_out')!r})\n"
        # and fine-tuning on a user's dataset, one epoch
        f"run(config_file='configs/train.json', meta_file='configs/metadata.json', bundle_root='.', dataset_dir={str(SAMPLE)!r}, "
        "num_labeled=4, max_epochs=1, batch_size=4, val_interval=1, seed=1)\n")  # another seed than the packaged run's
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tskd_components" not in "".join(p.read_text() for p in (bundle / "configs").glob("*.json"))
    assert (bundle / "runs" / "hc18_n4_s1" / "training_log.csv").is_file()  # the fine-tuning run
    assert file_digest(bundle / "models" / "model.pt") != file_digest(hosted)  # its weights replaced the fetched ones
    masks = sorted(p.name for p in (tmp_path / "repo_out" / "masks").glob("*_seg.png"))
    assert len(masks) == len(list(images.iterdir())) and masks == sorted(p.name for p in (tmp_path / "zoo_out" / "masks").glob("*_seg.png"))
    for name in masks:
        assert (tmp_path / "repo_out" / "masks" / name).read_bytes() == (tmp_path / "zoo_out" / "masks" / name).read_bytes(), name
    shipped = sorted(p.stem for p in (bundle / "sample_data" / "images").iterdir())
    test_ids = json.loads((SAMPLE / "split.json").read_text())["test"]
    assert shipped and set(shipped) <= set(test_ids)  # never a training image
    assert sorted(p.name for p in (tmp_path / "zoo_sample" / "masks").glob("*_seg.png")) == [f"{i}_seg.png" for i in shipped]


def test_a_packaged_student_passes_the_zoos_ci_checks(trained_student, tmp_path):
    """``tests/zoo_ci.py`` runs the checks of the zoo's ``ci/verify_bundle.py`` (full mode) in a process without
    tskd_components: required files after fetching large files, version in changelog, metadata schema,
    inference (and training) workflow properties, ``verify_net_in_out``, scripted and traced ``ckpt_export``."""
    import subprocess
    import sys
    import zipfile

    from tests.conftest import REPO

    archive = package_bundle(trained_student, tmp_path / "dist", trained_student / "runs" / "hc18_n4_s0", method="scratch")
    zipfile.ZipFile(archive).extractall(tmp_path / "models")
    done = subprocess.run([sys.executable, "-P", str(REPO / "tests" / "zoo_ci.py"), str(tmp_path / "models"), "tskd_student_segmentation",
                           str(REPO / "bundles" / "metadata_schema.json"), str(SAMPLE)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    passed = [line.split(":")[0] for line in done.stdout.splitlines() if line.endswith(": ok")]
    assert passed == ["verify_bundle_directory", "verify_version_changes", "verify_metadata_format", "verify_bundle_properties (inference)",
                      "train workflow properties (beyond the zoo)", "verify_data_shape", "verify_torchscript (scripted and traced)"]


def test_tskd_package_zips_a_fine_tune_stage(trained_student, tmp_path, capsys):
    import torch
    from monai.bundle import download

    from tskd_components.pipeline.cli import main

    stage = tmp_path / "finetune" / "ts_kd_n4_s0"  # the layout of a `tskd experiment` fine-tune stage
    shutil.copytree(trained_student / "models", stage / "models")
    shutil.copytree(trained_student / "runs" / "hc18_n4_s0", stage / "run")
    (stage / "result.json").write_text(json.dumps({"method": "ts_kd", "teacher": "SAM standin [stand-in ...], LoRA r4"}))
    # a student trained with UNETR before the resolved config named the decoder: packaging reads it from the weights
    torch.save(ViTSegmenter(64, 3, 2, decoder="unetr").state_dict(), stage / "models" / "model.pt")
    resolved = json.loads((stage / "run" / "config.resolved.json").read_text())
    assert resolved.pop("decoder") == "light"
    (stage / "run" / "config.resolved.json").write_text(json.dumps(resolved))
    assert main(["package", str(stage), str(tmp_path / "dist")]) == 0
    out = capsys.readouterr().out
    archive = Path(out.split("bundle: ")[1].splitlines()[0])
    assert Path(out.split("weights: ")[1].split(" (")[0]).is_file()
    download(name="tskd_student_segmentation", bundle_dir=str(tmp_path / "zoo"), url=archive.as_uri())
    meta = json.loads((tmp_path / "zoo" / "tskd_student_segmentation" / "configs" / "metadata.json").read_text())
    assert meta["training"]["method"] == "ts_kd" and meta["training"]["teacher"].startswith("SAM standin")
    assert meta["student"]["decoder"] == "unetr" and meta["student"]["token_grid"] == [4, 4]
    inference = json.loads((tmp_path / "zoo" / "tskd_student_segmentation" / "configs" / "inference.json").read_text())
    assert inference["decoder"] == "unetr" and inference["image_size"] == 64
    assert (tmp_path / "zoo" / "tskd_student_segmentation" / "scripts" / "student.py").is_file()
    assert main(["package", str(tmp_path / "finetune"), str(tmp_path / "dist")]) == 2  # not a stage: one clear line
    assert "is not a finished fine-tune stage" in capsys.readouterr().err


def test_tskd_export_writes_torchscript_onnx_and_int8_of_a_fine_tune_stage(trained_student, tmp_path, capsys):
    import onnx

    from tskd_components.pipeline.cli import main

    stage = tmp_path / "finetune" / "scratch_n4_s0"
    shutil.copytree(trained_student / "models", stage / "models")
    shutil.copytree(trained_student / "runs" / "hc18_n4_s0", stage / "run")
    out = tmp_path / "exported"
    assert main(["export", str(stage), str(out), "--int8", "--threads", "1", "--no-spinning"]) == 0
    assert "int8: test Dice" in capsys.readouterr().out
    report = json.loads((out / "export_report.json").read_text())
    assert report["student"] == "vit_tiny + light" and report["input_shape"] == [1, 3, 64, 64]
    assert report["onnx_max_abs_diff"] <= 1e-4 and report["torchscript_max_abs_diff"] <= 1e-4
    int8 = report["int8"]
    assert int8 == json.loads((out / "int8_report.json").read_text()) and int8["threads"] == 1 and int8["spinning"] is False
    assert abs(int8["dice_difference"]) <= 0.02 and int8["size_mb_int8"] < 0.5 * int8["size_mb_fp32"]
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    # the Gemm outputs stay fp32: no QuantizeLinear reads a Gemm's output
    gemm_outputs = {o for node in graph.node if node.op_type == "Gemm" for o in node.output}
    assert gemm_outputs and not any(n.op_type == "QuantizeLinear" and n.input[0] in gemm_outputs for n in graph.node)
    assert all((out / name).is_file() for name in ("model.ts", "model.onnx", "export_parity.json"))
    assert main(["export", str(tmp_path / "finetune"), str(out)]) == 2  # not a stage: one clear line
    assert "is not a finished fine-tune stage" in capsys.readouterr().err
