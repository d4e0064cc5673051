"""Drawn samples: written once, resumed identically after an interruption, read back as the sampler made them."""

import json

import pytest
import torch
from diffusers import DDPMScheduler

from tskd_components.data import DatasetError
from tskd_components.synthesis import EMAWeights, build_unet, draw_samples, load_unet, read_samples, sample, save_unet
from tskd_components.synthesis import samples as samples_module


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    unet = build_unet(32, 1, block_out_channels=(16, 32), attention_levels=(False, True))
    return save_unet(EMAWeights(unet), DDPMScheduler(num_train_timesteps=1000), tmp_path / "model")


@pytest.mark.parametrize("eta", [0.0, 1.0])  # 1.0: ancestral steps draw noise too, from each batch's own generator
def test_an_interrupted_draw_resumes_to_the_same_images(model, tmp_path, monkeypatch, eta):
    draw_samples(model, tmp_path / "whole", 7, steps=2, batch_size=3, seed=1, eta=eta)
    written = []

    def fail_on_second_batch(images, folder, start=0):
        if written:
            raise KeyboardInterrupt
        written.append(start)
        return original(images, folder, start=start)

    original = samples_module.write_pngs
    monkeypatch.setattr(samples_module, "write_pngs", fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        draw_samples(model, tmp_path / "resumed", 7, steps=2, batch_size=3, seed=1, eta=eta)
    assert not (tmp_path / "resumed" / "samples.json").exists()
    assert json.loads((tmp_path / "resumed" / "samples.started.json").read_text())["finished_batches"] == 1
    calls = []
    monkeypatch.setattr(samples_module, "write_pngs", lambda images, folder, start=0: calls.append(start) or original(images, folder, start=start))
    draw_samples(model, tmp_path / "resumed", 7, steps=2, batch_size=3, seed=1, eta=eta)
    assert calls == [3, 6]  # the finished batch was kept, not drawn again
    whole, resumed = (json.loads((tmp_path / d / "samples.json").read_text()) for d in ("whole", "resumed"))
    assert [f["sha256"] for f in resumed["files"]] == [f["sha256"] for f in whole["files"]] and len(whole["files"]) == 7
    assert resumed["eta"] == eta
    assert not (tmp_path / "resumed" / "samples.started.json").exists()
    calls.clear()
    draw_samples(model, tmp_path / "resumed", 7, steps=2, batch_size=3, seed=1, eta=eta)
    assert calls == []  # finished: nothing drawn again


def test_samples_read_back_as_the_sampler_made_them(model, tmp_path):
    draw_samples(model, tmp_path / "drawn", 4, steps=2, batch_size=4, seed=5)
    unet, scheduler_config = load_unet(model)
    made = sample(unet, scheduler_config, 4, steps=2, batch_size=4, seed=5)
    read = read_samples(tmp_path / "drawn", 4)
    assert read.shape == made.shape == (4, 1, 32, 32)
    assert (read - made).abs().max() <= 0.5 / 127.5 + 1e-6  # 8-bit rounding only: same orientation, same order
    assert (read - made.transpose(-1, -2)).abs().max() > 0.1  # a transposed read would not pass


def test_a_folder_drawn_before_eta_was_recorded_is_still_finished(model, tmp_path, monkeypatch):
    manifest = draw_samples(model, tmp_path / "drawn", 3, steps=2, batch_size=3)
    old = json.loads(manifest.read_text())
    del old["eta"], old["prediction_type"]
    manifest.write_text(json.dumps(old))
    calls = []
    monkeypatch.setattr(samples_module, "write_pngs", lambda *a, **k: calls.append(1))
    draw_samples(model, tmp_path / "drawn", 3, steps=2, batch_size=3)
    assert calls == []  # deterministic DDIM then: the same images, not drawn again
    draw_samples(model, tmp_path / "drawn", 3, steps=2, batch_size=3, eta=1.0)
    assert calls == [1]  # another sampler: drawn anew


def test_the_manifest_names_what_the_model_predicts(tmp_path):
    unet = build_unet(32, 1, block_out_channels=(16, 32), attention_levels=(False, True))
    for kind in ("epsilon", "v_prediction"):
        folder = save_unet(EMAWeights(unet), DDPMScheduler(num_train_timesteps=1000, prediction_type=kind), tmp_path / kind)
        manifest = json.loads(draw_samples(folder, tmp_path / f"drawn_{kind}", 1, steps=2, batch_size=1).read_text())
        assert manifest["prediction_type"] == kind


def test_ancestral_steps_add_seeded_noise(model):
    unet, scheduler_config = load_unet(model)
    ddim, ancestral, again = (sample(unet, scheduler_config, 3, steps=3, batch_size=3, seed=4, eta=eta) for eta in (0.0, 1.0, 1.0))
    assert torch.equal(ancestral, again)  # seeded
    assert (ancestral - ddim).abs().mean() > 0.01  # the same initial noise, other images: the steps' noise counts


def test_too_few_or_unfinished_samples_are_a_clear_error(model, tmp_path):
    draw_samples(model, tmp_path / "drawn", 2, steps=2, batch_size=2)
    with pytest.raises(DatasetError, match="holds 2 samples but 3 are needed"):
        read_samples(tmp_path / "drawn", 3)
    (tmp_path / "drawn" / "samples.json").unlink()
    with pytest.raises(DatasetError, match="not a finished samples folder"):
        read_samples(tmp_path / "drawn", 1)


def test_a_quality_report_reads_drawn_samples_and_names_their_model(model, sample_dataset, tmp_path):
    from tskd_components.synthesis import report_for_model

    drawn = json.loads(draw_samples(model, tmp_path / "drawn", 6, steps=2, batch_size=3, seed=2).read_text())
    report = report_for_model(sample_dataset, "", tmp_path / "report", num_samples=5, samples_dir=tmp_path / "drawn", grid_count=4)
    assert report["num_synthetic"] == 5 and report["model_sha256"] == drawn["model_sha256"]
    assert report["sampler"] == {"ddim_steps": 2, "eta": 0.0, "seed": 2}  # from the folder's manifest
    assert json.loads((tmp_path / "report" / "quality.json").read_text())["samples_dir"] == str(tmp_path / "drawn")
    sampled = report_for_model(sample_dataset, model, tmp_path / "sampled", num_samples=5, steps=2, seed=2, grid_count=4)
    assert report["fid"] == pytest.approx(sampled["fid"], rel=0.05)  # the same images up to 8-bit rounding
