"""End-to-end runs of bundles/tskd_sam_lora (tiny random-init SAM of the real classes) on the HC18 sample."""

import json
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import verify_metadata
from PIL import Image

from tests.bundles.conftest import TINY_TEACHER, ddp_failure, run_bundle
from tests.conftest import REPO, SAMPLE

CONFIGS = REPO / "bundles" / "tskd_sam_lora" / "configs"
TINY = TINY_TEACHER | {"num_labeled": 8}


def bundle(*names: str, **overrides):
    return run_bundle("tskd_sam_lora", *names, **overrides)


@pytest.fixture
def trained(trained_teacher) -> Path:
    return trained_teacher


def test_training_exports_lora_and_merged_weights(trained):
    names = sorted(p.name for p in (trained / "models").iterdir())
    assert names == ["checkpoint_epoch=2.pt", "model.pt", "model.pt.best.json", "resume_signature.json", "teacher_lora.safetensors", "teacher_merged.safetensors"]
    config = json.loads(next((trained / "runs").glob("*/config.resolved.json")).read_text())
    assert config["sam_variant"] == "tiny" and config["random_init"] is True and config["lora_rank"] == 4


def test_evaluate_and_inference(trained, tmp_path):
    bundle("train.json", "evaluate.json", bundle_root=str(trained), dataset_dir=str(SAMPLE), **TINY)
    report = json.loads(next((trained / "runs").glob("*/eval_test/metrics.json")).read_text())
    assert set(report["metrics"]) == {"mean_dice", "hd95", "nsd", "empty_predictions"} and report["num_images"] == 10
    out = tmp_path / "infer"
    bundle("inference.json", bundle_root=str(trained), input_dir=str(SAMPLE / "images"), output_dir=str(out),
           image_size=64, sam_variant="tiny")
    masks = sorted((out / "masks").glob("*_seg.png"))
    assert len(masks) == 40
    assert np.array(Image.open(masks[0])).shape == np.array(Image.open(SAMPLE / "images" / masks[0].name.replace("_seg", ""))).shape


def test_inference_workflow_builds_without_trained_weights_and_has_the_zoos_properties():
    """network_def builds without trained weights (they are loaded in ``run`` when ``load_pretrain``), so the zoo's
    inference property check passes on the untrained bundle."""
    from monai.bundle import create_workflow
    from monai.bundle.properties import InferProperties, MetaProperties

    workflow = create_workflow(workflow_type="inference", config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"),
                               bundle_root=str(CONFIGS.parent), logging_file=None)
    workflow.properties = {**MetaProperties, **InferProperties}
    assert workflow.check_properties() == []
    assert "weights" not in json.loads((CONFIGS / "inference.json").read_text())["network_def"]


def test_metadata():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(REPO / "bundles" / "metadata_schema.json"))
    assert (CONFIGS.parent / "LICENSE").is_file() and (CONFIGS.parent / "docs" / "README.md").is_file()


def test_two_process_gloo_ddp_training(tmp_path):
    import subprocess
    import sys

    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518", "-m", "monai.bundle", "run",
           "--config_file", configs, "--meta_file", str(CONFIGS / "metadata.json"), "--bundle_root", str(tmp_path), "--dataset_dir", str(SAMPLE),
           "--image_size", "64", "--max_epochs", "1", "--num_labeled", "8", "--batch_size", "2", "--sam_variant", "tiny", "--random_init", "true"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, ddp_failure(result.stderr)
    assert {"model.pt", "teacher_lora.safetensors", "teacher_merged.safetensors"} <= {p.name for p in (tmp_path / "models").iterdir()}
