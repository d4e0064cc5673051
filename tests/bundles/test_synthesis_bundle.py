"""End-to-end runs of bundles/tskd_synthesis (tiny UNet, 32 px) on the HC18 sample: train + resume, sample, transfer set."""

import csv
import json

import pytest
import torch
from monai.bundle import verify_metadata

from tests.bundles.conftest import run_bundle
from tests.conftest import REPO, SAMPLE

TINY = {"dataset_dir": str(SAMPLE), "image_size": 32, "batch_size": 8, "block_out_channels": [16, 32], "attention_levels": [False, True],
        "ddim_steps": 3, "report_samples": 6}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthesis")
    run_bundle("tskd_synthesis", "train.json", bundle_root=str(root), max_epochs=1, **TINY)
    return root


def test_training_resumes_from_the_saved_step(trained):
    run_dir = trained / "runs" / "hc18_32px_s0"
    first = torch.load(run_dir / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=False)
    assert first["trainer"]["iteration"] == 3  # 24 images / batch 8
    run_bundle("tskd_synthesis", "train.json", bundle_root=str(trained), max_epochs=2, **TINY)
    second = torch.load(run_dir / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=False)
    assert second["trainer"]["iteration"] == 6 and not (run_dir / "checkpoints" / "checkpoint_epoch=1.pt").exists()
    assert [r["epoch"] for r in csv.DictReader((run_dir / "training_log.csv").open())] == ["1", "2"]
    quality = json.loads((run_dir / "quality" / "quality.json").read_text())
    assert quality["num_synthetic"] == 6 and quality["fid"] > 0 and (run_dir / "quality" / "samples_grid.png").is_file()


def test_sample_and_build_transfer_set(trained):
    run_bundle("tskd_synthesis", "train.json", "sample.json", bundle_root=str(trained), num_samples=3, sample_seed=5, **TINY)
    samples = sorted((trained / "runs" / "hc18_32px_s0").glob("samples_seed5/*.png"))
    run_bundle("tskd_synthesis", "train.json", "build_transfer_set.json", bundle_root=str(trained), target_size=27, **TINY)
    manifest = json.loads((trained / "transfer_sets" / "hc18_27" / "manifest.json").read_text())
    assert (manifest["num_real"], manifest["num_synthetic"]) == (24, 3)
    assert len(samples) == 3
    drawn = json.loads((samples[0].parent / "samples.json").read_text())  # drawn once: a set elsewhere takes them as they are
    assert drawn["seed"] == 5 and [f["file"] for f in drawn["files"]] == [p.name for p in samples]
    run_bundle("tskd_synthesis", "train.json", "build_transfer_set.json", bundle_root=str(trained), target_size=26,
               samples_dir=str(samples[0].parent), transfer_dir=str(trained / "from_samples"), **TINY)
    synthetic = [e for e in json.loads((trained / "from_samples" / "manifest.json").read_text())["images"] if e["source"] == "synthetic"]
    assert [e["sha256"] for e in synthetic] == [f["sha256"] for f in drawn["files"][:2]]


def test_fine_tuning_starts_from_initial_weights(trained, tmp_path):
    """The pool recipe's second step: a run initialised with an exported UNet (here with a learning rate of 0, so the
    weights it exports must be the initial ones); a UNet of another shape is refused with the settings to pass."""
    from tskd_components.synthesis import build_unet, init_unet, load_unet

    pretrained = trained / "runs" / "hc18_32px_s0" / "model"
    run_bundle("tskd_synthesis", "train.json", bundle_root=str(tmp_path), max_epochs=1, initial_weights=str(pretrained), learning_rate=0.0,
               **TINY)
    start, after = load_unet(pretrained)[0].state_dict(), load_unet(tmp_path / "runs" / "hc18_32px_s0" / "model")[0].state_dict()
    assert all(torch.equal(start[k], after[k]) for k in start)
    with pytest.raises(ValueError, match="pass the pre-training's image_size"):
        init_unet(build_unet(64, 1, (16, 32), 1, (False, True)), pretrained)


def test_a_v_prediction_model_exports_its_objective_and_samples_with_it(tmp_path):
    """prediction_type and snr_gamma reach the run's resolved settings; the exported scheduler carries the prediction
    type, so the end-of-training report's DDIM sampler (built from it) follows it."""
    run_bundle("tskd_synthesis", "train.json", bundle_root=str(tmp_path), max_epochs=1, prediction_type="v_prediction", snr_gamma=5.0, **TINY)
    run_dir = tmp_path / "runs" / "hc18_32px_s0"
    assert json.loads((run_dir / "model" / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    resolved = json.loads((run_dir / "config.resolved.json").read_text())
    assert (resolved["prediction_type"], resolved["snr_gamma"]) == ("v_prediction", 5.0)
    assert json.loads((run_dir / "quality" / "quality.json").read_text())["num_synthetic"] == 6


def test_metadata():
    verify_metadata(meta_file=str(REPO / "bundles/tskd_synthesis/configs/metadata.json"), filepath=str(REPO / "bundles/metadata_schema.json"))


def test_gpu_overlay_builds_a_wider_128px_unet_that_denoises_at_its_size():
    from monai.bundle import ConfigParser

    folder = REPO / "bundles" / "tskd_synthesis" / "configs"
    parser = ConfigParser()
    parser.read_config([str(folder / "train.json"), str(folder / "gpu.json")])
    parser["dataset_dir"] = str(SAMPLE)
    unet = parser.get_parsed_content("network_def")
    cpu = ConfigParser()
    cpu.read_config(str(folder / "train.json"))
    cpu["dataset_dir"] = str(SAMPLE)
    assert unet.config.sample_size == 128 and list(unet.config.block_out_channels) == [64, 128, 256, 256]
    assert parser.get_parsed_content("batch_size") == 32 and parser.get_parsed_content("num_workers") == 4
    assert sum(p.numel() for p in unet.parameters()) > 4 * sum(p.numel() for p in cpu.get_parsed_content("network_def").parameters())
    with torch.no_grad():
        out = unet(torch.zeros(1, unet.config.in_channels, 128, 128), 10).sample
    assert out.shape == (1, unet.config.in_channels, 128, 128)
