"""End-to-end runs of bundles/tskd_ssl_pretrain (MAE, MoCo v3) on the HC18 sample, handed to the student."""

import csv

import pytest
from monai.bundle import verify_metadata

from tests.bundles.conftest import run_bundle
from tests.conftest import REPO, SAMPLE
from tskd_components.networks import ViTSegmenter, load_student_weights


@pytest.mark.parametrize("method,part", [("mae", "masked_fraction"), ("mocov3", "momentum")])
def test_pretraining_exports_an_encoder_the_student_loads(method, part, tmp_path):
    run_bundle("tskd_ssl_pretrain", "train.json", f"{method}.json", bundle_root=str(tmp_path), dataset_dir=str(SAMPLE),
               image_size=64, batch_size=8, max_epochs=2)
    run_dir = tmp_path / "runs" / f"hc18_{method}_s0"
    rows = list(csv.DictReader((run_dir / "training_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and part in rows[0]
    report = load_student_weights(ViTSegmenter(64, 3, 2), run_dir / "student_pretrained.safetensors")
    assert not report.missing_encoder and not report.unexpected


def test_metadata():
    verify_metadata(meta_file=str(REPO / "bundles/tskd_ssl_pretrain/configs/metadata.json"), filepath=str(REPO / "bundles/metadata_schema.json"))
    assert (REPO / "bundles/tskd_ssl_pretrain/LICENSE").is_file()
