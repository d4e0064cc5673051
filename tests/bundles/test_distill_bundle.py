"""End-to-end runs of bundles/tskd_distill: TS-KD from a cached tiny teacher, TA-KD online, hand-off to the student."""

import csv
import json
from pathlib import Path

import pytest
from monai.bundle import verify_metadata

from tests.bundles.conftest import TINY_TEACHER, ddp_failure, run_bundle
from tests.conftest import REPO, SAMPLE
from tskd_components.distill import StaleCacheError, TeacherCache, teacher_id
from tskd_components.networks import ViTSegmenter, load_student_weights

KD = {"sam_variant": "tiny", "random_init": True, "image_size": 64, "batch_size": 8}


def merged(trained_teacher: Path) -> str:
    return str(trained_teacher / "models" / "teacher_merged.safetensors")


@pytest.fixture(scope="module")
def cache_dir(trained_teacher, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("kd") / "cache"
    run_bundle("tskd_distill", "train.json", "ts_kd.json", "build_cache.json", bundle_root=str(cache.parent), dataset_dir=str(SAMPLE),
               cache_dir=str(cache), teacher_weights=merged(trained_teacher), **TINY_TEACHER)
    return cache


def distill(root: Path, method: str = "ts_kd", **overrides):
    return run_bundle("tskd_distill", "train.json", f"{method}.json", bundle_root=str(root), dataset_dir=str(SAMPLE), **(KD | overrides))


def test_cache_of_the_fine_tuned_and_frozen_teacher(trained_teacher, cache_dir, tmp_path):
    teacher = teacher_id("fine_tuned", "tiny", merged(trained_teacher))
    cache = TeacherCache(cache_dir, teacher_id=teacher, layers=[0, 1, 2, 3])
    assert len(cache.ids) == 24 and cache[cache.ids[0]]["logits"].shape == (2, 16, 16)
    run_bundle("tskd_distill", "train.json", "ta_kd.json", "build_cache.json", bundle_root=str(tmp_path), dataset_dir=str(SAMPLE), **TINY_TEACHER)
    frozen = TeacherCache(tmp_path / "cache" / "hc18_frozen", teacher_id="random-init:tiny:seed0")
    assert not frozen.has_logits and len(frozen.ids) == 24


def test_train_config_without_a_method_overlay_names_the_overlays(tmp_path):
    with pytest.raises(Exception) as info:
        run_bundle("tskd_distill", "train.json", bundle_root=str(tmp_path), dataset_dir=str(SAMPLE), **KD)
    assert "needs a method overlay, one of ['ts_kd.json', 'ta_kd.json']" in str(info.value) + str(info.value.__cause__)


@pytest.fixture(scope="module")
def ts_kd_run(trained_teacher, cache_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill")
    distill(root, cache_dir=str(cache_dir), teacher_weights=str(trained_teacher / "models" / "teacher_merged.safetensors"), max_epochs=2)
    return root / "runs" / "hc18_ts_kd_s0"


def test_ts_kd_from_cache_logs_each_loss_part_and_resumes(ts_kd_run, trained_teacher, cache_dir):
    rows = list(csv.DictReader((ts_kd_run / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "features", "predictions", "kl", "feature_0", "feature_3", "lr"} <= set(rows[0])
    config = json.loads((ts_kd_run / "config.resolved.json").read_text())
    assert config["teacher_id"].startswith("sha256:") and config["teacher_layers"] == [0, 1, 2, 3]
    distill(ts_kd_run.parents[1], cache_dir=str(cache_dir), teacher_weights=str(trained_teacher / "models" / "teacher_merged.safetensors"), max_epochs=3)
    rows = list(csv.DictReader((ts_kd_run / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert sorted(p.name for p in (ts_kd_run / "models").iterdir()) == ["checkpoint_epoch=3.pt", "resume_signature.json"]


def test_exported_student_loads_into_the_student_bundle(ts_kd_run, tmp_path):
    weights = ts_kd_run / "student_pretrained.safetensors"
    report = load_student_weights(ViTSegmenter(64, 3, 2), weights)
    assert not report.missing and not report.unexpected
    run_bundle("tskd_student_segmentation", "train.json", bundle_root=str(tmp_path), dataset_dir=str(SAMPLE), num_labeled=4,
               max_epochs=1, image_size=64, batch_size=4, initial_weights=str(weights))
    assert (tmp_path / "models" / "model.pt").is_file()


def test_stale_cache_is_refused(trained_teacher, cache_dir, tmp_path):
    with pytest.raises(Exception) as info:
        distill(tmp_path, cache_dir=str(cache_dir), teacher_weights=str(trained_teacher / "models" / "teacher_lora.safetensors"), max_epochs=1)
    err = info.value
    while err.__cause__ is not None and not isinstance(err, StaleCacheError):
        err = err.__cause__
    assert isinstance(err, StaleCacheError) and "is stale: teacher" in str(err)


def test_task_agnostic_kd_online_with_the_frozen_teacher_for_a_step_budget(tmp_path):
    distill(tmp_path, "ta_kd", max_epochs=2, max_steps=4)  # 24 images, batch 8: 3 steps per epoch, the 2nd ends after 1
    run_dir = tmp_path / "runs" / "hc18_ta_kd_s0"
    assert json.loads((run_dir / "training_summary.json").read_text())["steps"] == 4
    rows = list(csv.DictReader((run_dir / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # the shortened epoch is logged too
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)  # the cosine spans the 4 steps, not 2 whole epochs (6)
    assert "predictions" not in rows[0] and float(rows[0]["features"]) > 0
    report = load_student_weights(ViTSegmenter(64, 3, 2), run_dir / "student_pretrained.safetensors")
    assert not report.missing_encoder and all(k.startswith("decoder.") for k in report.missing)


def test_metadata():
    verify_metadata(meta_file=str(REPO / "bundles/tskd_distill/configs/metadata.json"), filepath=str(REPO / "bundles/metadata_schema.json"))


def test_two_process_gloo_ddp_distillation(trained_teacher, cache_dir, tmp_path):
    import subprocess
    import sys

    import torch

    configs = REPO / "bundles" / "tskd_distill" / "configs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519", "-m", "monai.bundle", "run",
           "--config_file", f"['{configs / 'train.json'}','{configs / 'ts_kd.json'}','{configs / 'multi_gpu_train.json'}']", "--meta_file", str(configs / "metadata.json"),
           "--bundle_root", str(tmp_path), "--dataset_dir", str(SAMPLE), "--cache_dir", str(cache_dir),
           "--teacher_weights", str(trained_teacher / "models" / "teacher_merged.safetensors"), "--max_epochs", "2",
           *[a for k, v in KD.items() for a in (f"--{k}", str(v).lower() if isinstance(v, bool) else str(v))]]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, ddp_failure(result.stderr)
    run = tmp_path / "runs" / "hc18_ts_kd_s0"
    rows = list(csv.DictReader((run / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[-1]["predictions"]) > 0  # one log, written by rank 0
    state = torch.load(run / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert all(not k.startswith("module.") for k in state["model"]) and "kd_loss" in state  # DDP wrappers not saved
    report = load_student_weights(ViTSegmenter(64, 3, 2), run / "student_pretrained.safetensors")
    assert not report.missing and not report.unexpected


def test_ts_kd_distils_a_hierarchical_student_from_the_same_cache(trained_teacher, cache_dir, tmp_path):
    distill(tmp_path, cache_dir=str(cache_dir), teacher_weights=merged(trained_teacher), max_epochs=1, student_name="tiny_vit_5m",
            **{"network_def#depths": (1, 1, 1, 1)})
    run = tmp_path / "runs" / "hc18_ts_kd_s0"
    rows = list(csv.DictReader((run / "training_log.csv").open()))
    assert rows and {"feature_0", "feature_3", "kl"} <= set(rows[0]) and float(rows[0]["loss"]) > 0
    from tskd_components.networks import create_student

    student = create_student("tiny_vit_5m", image_size=64, num_classes=2, depths=(1, 1, 1, 1))
    report = load_student_weights(student, run / "student_pretrained.safetensors")
    assert not report.missing_encoder  # the distilled backbone and neck load into the student bundle's network
