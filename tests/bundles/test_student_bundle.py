"""End-to-end runs of bundles/tskd_student_segmentation through monai.bundle, on the in-repo HC18 sample."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser, run, verify_metadata
from PIL import Image

from tests.bundles.conftest import ddp_failure
from tests.conftest import REPO, SAMPLE
from tskd_components.data import load_datalist
from tskd_components.networks import ViTSegmenter

BUNDLE = REPO / "bundles" / "tskd_student_segmentation"
CONFIGS = BUNDLE / "configs"
# a test-size student of the same classes (depth 4, 64 px) so a run takes seconds
SMALL = {"image_size": 64, "batch_size": 4, "network_def#depth": 4, "network_def#feature_size": 8}


def train(bundle_root: Path, **overrides):
    args = {"bundle_root": str(bundle_root), "dataset_dir": str(SAMPLE), "num_labeled": 6, "max_epochs": 2} | SMALL | overrides
    return run(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), logging_file=str(CONFIGS / "logging.conf"), **args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("student_bundle")
    shutil.copytree(CONFIGS, root / "configs")
    train(root)
    return root


def test_training_writes_checkpoints_and_run_record(trained):
    run_dir = trained / "runs" / "hc18_n6_s0"
    assert sorted(p.name for p in (trained / "models").iterdir()) == ["checkpoint_epoch=2.pt", "model.pt", "model.pt.best.json", "resume_signature.json"]
    config = json.loads((run_dir / "config.resolved.json").read_text())
    assert config["num_labeled"] == 6 and config["image_size"] == 64 and config["dataset_dir"] == str(SAMPLE)
    assert config["network"] == "tskd_components.networks.student.ViTSegmenter"
    assert "monai" in json.loads((run_dir / "versions.json").read_text())
    assert len(json.loads((run_dir / "labeled_ids.json").read_text())["ids"]) == 6
    rows = list(csv.DictReader((run_dir / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["val_mean_dice"]
    assert (run_dir / "training_curves.png").is_file()


def test_a_network_def_override_is_named_in_the_run_record(tmp_path):
    unet = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@num_classes",
            "features": [4, 4, 8, 8, 8, 4]}  # the experiment's UNet reference, test-sized
    run(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(tmp_path), dataset_dir=str(SAMPLE), num_labeled=6, max_epochs=1, image_size=64, batch_size=4, network_def=unet)
    config = json.loads(next((tmp_path / "runs").glob("*/config.resolved.json")).read_text())
    assert config["network"] == "monai.networks.nets.basic_unet.BasicUNet"


def test_training_resumes_from_the_last_checkpoint(trained, tmp_path):
    root = tmp_path / "resume"
    shutil.copytree(trained, root)
    train(root, max_epochs=3)
    rows = list(csv.DictReader((root / "runs" / "hc18_n6_s0" / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[:2] == list(csv.DictReader((trained / "runs" / "hc18_n6_s0" / "training_log.csv").open()))
    assert sorted(p.name for p in (root / "models").iterdir()) == ["checkpoint_epoch=3.pt", "model.pt", "model.pt.best.json", "resume_signature.json"]


def test_training_stops_when_validation_dice_stalls(tmp_path):
    # learning rate 0: validation Dice never improves after the first validation, so patience 2 stops at epoch 3
    train(tmp_path, max_epochs=8, val_interval=1, patience=2, learning_rate=0.0)
    summary = json.loads((tmp_path / "runs" / "hc18_n6_s0" / "training_summary.json").read_text())
    assert summary == {"steps": 6, "epochs": 3, "max_epochs": 8, "stopped_early": True}  # 6 labels, batch 4: 2 steps an epoch
    train(tmp_path / "capped", max_epochs=3, val_interval=1, patience=0, learning_rate=0.0)
    assert json.loads((tmp_path / "capped" / "runs" / "hc18_n6_s0" / "training_summary.json").read_text())["stopped_early"] is False
    # validations up to epoch 2 are a warm-up: epoch 3 sets the bar, epochs 4 and 5 do not beat it
    train(tmp_path / "warm", max_epochs=8, val_interval=1, patience=2, patience_start_epoch=2, learning_rate=0.0)
    assert json.loads((tmp_path / "warm" / "runs" / "hc18_n6_s0" / "training_summary.json").read_text())["epochs"] == 5


def test_evaluate_reports_dice_hd95_nsd_per_class(trained, capsys):
    run(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(trained), dataset_dir=str(SAMPLE), num_labeled=6, **SMALL,
    )
    eval_dir = trained / "runs" / "hc18_n6_s0" / "eval_test"
    report = json.loads((eval_dir / "metrics.json").read_text())
    assert report["num_images"] == 10 and report["split"] == "test"
    assert set(report["metrics"]) == {"mean_dice", "hd95", "nsd", "empty_predictions"}
    for entry in report["metrics"].values():
        assert list(entry["per_class"]) == ["fetal head"]
    assert '"mean_dice"' in capsys.readouterr().out
    assert len(list((eval_dir / "overlays").glob("*_overlay.png"))) == 10
    # the metrics are those of the saved masks at each image's native size against the masks as delivered
    dices, empty = [], 0
    for item in load_datalist(SAMPLE, "test"):
        truth = np.array(Image.open(item["label"])) > 0
        pred = np.array(Image.open(eval_dir / "overlays" / f"{Path(item['image']).stem}_mask.png")) > 0
        assert pred.shape == truth.shape
        dices.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
        empty += int(truth.any() and not pred.any())
    assert report["metrics"]["mean_dice"]["mean"] == pytest.approx(float(np.mean(dices)), abs=1e-4)
    assert report["metrics"]["empty_predictions"]["total"] == empty


def test_inference_writes_masks_at_source_size_and_overlays(trained, tmp_path):
    out = tmp_path / "infer"
    run(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(trained), input_dir=str(SAMPLE / "images"), output_dir=str(out), image_size=64,
        **{"network_def#depth": 4, "network_def#feature_size": 8},
    )
    sources = sorted((SAMPLE / "images").glob("*.png"))
    masks = sorted((out / "masks").glob("*_seg.png"))
    assert len(masks) == len(sources)
    for src, mask in zip(sources, masks):
        arr = np.array(Image.open(mask))
        assert arr.shape == np.array(Image.open(src)).shape[:2] and set(np.unique(arr)) <= {0, 1}
    assert len(list((out / "overlays").glob("*_overlay.png"))) == len(sources)


def test_missing_initial_weights_and_model_are_clear(tmp_path):
    with pytest.raises(Exception) as info:
        train(tmp_path, initial_weights=str(tmp_path / "pretrained.safetensors"), max_epochs=1)
    assert "pretrained.safetensors not found" in "".join(str(e) for e in _chain(info.value))
    with pytest.raises(Exception) as info:
        run(config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"), bundle_root=str(tmp_path / "empty"), input_dir=str(SAMPLE))
    assert "model.pt not found; train the bundle" in "".join(str(e) for e in _chain(info.value))


def test_metadata_follows_the_zoo_conventions(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(REPO / "bundles" / "metadata_schema.json"))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert len(fmt["inputs"]["image"]["spatial_shape"]) == 2
    assert fmt["outputs"]["pred"]["num_channels"] == len(fmt["outputs"]["pred"]["channel_def"])
    inference = json.loads((CONFIGS / "inference.json").read_text())
    assert {"network_def", "preprocessing", "inferer", "postprocessing"} <= set(inference)
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "docs" / "README.md").is_file()
    assert "segmentation" in BUNDLE.name


def test_metadata_states_the_student_the_configs_build():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for config in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / config))
        net = parser.get_parsed_content("network_def")
        grid = [s // net.patch_size for s in meta["network_data_format"]["inputs"]["image"]["spatial_shape"]]
        assert meta["student"]["decoder"] == parser["decoder"] == "light", config
        assert meta["student"]["token_grid"] == grid == [16, 16] and meta["student"]["patch_size"] == net.patch_size
        assert meta["student"]["hidden_blocks"] == list(net.hidden_indices)
        assert type(net.decoder).__name__ == "LightDecoder" and net.image_size == parser["image_size"]


def _chain(err):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def test_two_process_gloo_ddp_training(tmp_path):
    import subprocess
    import sys

    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "monai.bundle", "run",
           "--config_file", configs, "--meta_file", str(CONFIGS / "metadata.json"), "--bundle_root", str(tmp_path),
           "--dataset_dir", str(SAMPLE), "--image_size", "64", "--max_epochs", "2", "--num_labeled", "8", "--batch_size", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, ddp_failure(result.stderr)
    rows = list(csv.DictReader((tmp_path / "runs" / "hc18_n8_s0" / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["val_mean_dice"]  # written once, by rank 0
    import torch

    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(not k.startswith("module.") for k in state)  # DDP wrapper not saved


def test_inference_config_is_readable_without_metadata():
    """MONAI Label's BundleInferTask reads inference.json alone (no metadata.json): every id it uses must resolve."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = "."
    assert isinstance(parser.get_parsed_content("network_def"), ViTSegmenter)
    for key in ("preprocessing", "postprocessing", "inferer", "device"):
        assert parser.get_parsed_content(key) is not None


def test_a_corrupt_test_mask_is_refused_before_training(small_copy, tmp_path):
    data = small_copy(SAMPLE, n=6)
    test_id = json.loads((data / "split.json").read_text())["test"][-1]
    mask = next((data / "masks").glob(f"{test_id}.*"))
    mask.write_bytes(b"not a png")
    with pytest.raises(Exception) as info:
        train(tmp_path, dataset_dir=str(data), max_epochs=1)
    assert str(mask) in "".join(str(e) for e in _chain(info.value))
    assert not (tmp_path / "models").exists()  # refused before the first epoch


def test_a_validation_interval_past_the_last_epoch_is_refused(tmp_path):
    with pytest.raises(Exception) as info:
        train(tmp_path, max_epochs=2, val_interval=3)
    assert "val_interval (3) is larger than max_epochs (2)" in "".join(str(e) for e in _chain(info.value))


def test_inference_workflow_has_the_zoos_required_properties(trained):
    """As the model zoo's ci/verify_bundle.py checks a bundle: an inference ConfigWorkflow with no missing property."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(trained / "configs" / "inference.json"), meta_file=str(trained / "configs" / "metadata.json"),
                              logging_file=str(trained / "configs" / "logging.conf"), workflow_type="inference",
                              bundle_root=str(trained), **{"network_def#depth": 4, "network_def#feature_size": 8, "image_size": 64})
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.dataset_dir == str(SAMPLE) and workflow.dataset_dir in str(workflow.dataset.data[0]["image"])
