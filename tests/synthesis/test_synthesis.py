import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from ignite.engine import Engine
from monai.data import Dataset
from PIL import Image

from tskd_components.data import DatasetError, read_split
from tskd_components.synthesis import (
    DiffusionStep,
    EMAWeights,
    assert_no_test_images,
    build_transfer_set,
    build_unet,
    diffusion_preprocessing,
    quality_report,
    sample,
    save_unet,
    synthesis_datalist,
)
from tskd_components.synthesis.colour import SAMPLES_MATCHED, SAMPLES_RAW
from tskd_components.utils.weights import file_digest


def tiny_unet():
    torch.manual_seed(0)
    return build_unet(32, 1, block_out_channels=(16, 32), attention_levels=(False, True))


def real_batch(dataset, n=8):
    pre = diffusion_preprocessing(32, 1, augment=False)
    return torch.stack([it["image"] for it in Dataset(synthesis_datalist(dataset)[:n], pre)])


def test_training_loss_decreases_on_real_images(hc18):
    unet = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    ema = EMAWeights(unet, 0.99)
    engine = Engine(DiffusionStep(scheduler, ema))
    engine.network, engine.optimizer = unet, torch.optim.AdamW(unet.parameters(), lr=2e-3)
    engine.state.device = torch.device("cpu")
    batch = {"image": real_batch(hc18)}
    torch.manual_seed(1)
    losses = [engine._process_function(engine, batch)["loss"].item() for _ in range(40)]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])
    averaged = ema.averaged_copy()
    assert not torch.equal(next(averaged.parameters()), next(unet.parameters()))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_loss_targets_what_the_scheduler_predicts(kind):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=kind)
    step = DiffusionStep(scheduler)
    clean, noise, t = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 990])
    ac = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    truth = {"epsilon": noise, "sample": clean, "v_prediction": ac.sqrt() * noise - (1 - ac).sqrt() * clean}[kind]
    assert step.loss(truth, clean, noise, t).item() == pytest.approx(0.0, abs=1e-10)
    others = [v for k, v in {"epsilon": noise, "sample": clean}.items() if k != kind]
    assert all(step.loss(o, clean, noise, t).item() > 0.1 for o in others)


@pytest.mark.parametrize("kind, denominator", [("epsilon", lambda snr: snr), ("v_prediction", lambda snr: snr + 1), ("sample", lambda snr: 1.0)])
def test_min_snr_weights_cap_each_timestep_at_gamma(kind, denominator):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=kind)
    clean, noise = torch.zeros(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)
    t = torch.tensor([1, 100, 500, 900])  # SNR from ~10^4 down to ~10^-2
    ac = scheduler.alphas_cumprod[t].double()
    snr = ac / (1 - ac)
    errors = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(-1, 1, 1, 1).expand(4, 1, 4, 4)
    if kind == "v_prediction":  # with clean = noise = 0 the velocity is 0 too, so the error is the prediction
        assert scheduler.get_velocity(clean, noise, t).abs().max() == 0
    expected = (torch.tensor([1.0, 4.0, 9.0, 16.0]).double() * snr.clamp(max=5) / denominator(snr)).mean()
    weighted = DiffusionStep(scheduler, snr_gamma=5).loss(errors, clean, noise, t)
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-4)
    assert DiffusionStep(scheduler).loss(errors, clean, noise, t).item() == pytest.approx(7.5)  # gamma 0: plain MSE


def test_untrainable_prediction_types_and_gammas_are_refused():
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        DiffusionStep(DDPMScheduler(prediction_type="flow"))
    with pytest.raises(ValueError, match="snr_gamma must be"):
        DiffusionStep(DDPMScheduler(), snr_gamma=-1)


def test_sampling_is_deterministic_for_a_seed():
    unet = tiny_unet().eval()
    config = DDPMScheduler(num_train_timesteps=1000).config
    a = sample(unet, config, 3, steps=4, batch_size=2, seed=7)
    assert a.shape == (3, 1, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, sample(unet, config, 3, steps=4, batch_size=2, seed=7))
    assert not torch.equal(a, sample(unet, config, 3, steps=4, batch_size=2, seed=8))


def test_test_split_images_are_never_used(hc18):
    items = synthesis_datalist(hc18)
    split = read_split(hc18)
    assert {it["id"] for it in items} == set(split["train"])
    leak = items + [{"id": split["test"][0], "image": str(hc18 / "images" / f"{split['test'][0]}.png")}]
    with pytest.raises(DatasetError, match="never read test-split images"):
        assert_no_test_images(leak, hc18)
    renamed = [{"id": "innocent", "image": str(hc18 / "images" / f"{split['test'][1]}.png")}]
    with pytest.raises(DatasetError, match="never read test-split images"):
        assert_no_test_images(renamed, hc18)


def test_the_pool_used_by_synthesis_never_contains_a_test_image_or_the_target(sample_dataset, small_copy):
    target = small_copy(sample_dataset, n=3)  # another dataset folder
    items = synthesis_datalist(target, pool=[sample_dataset])
    assert [it["id"] for it in items] == read_split(sample_dataset)["train"]  # the pool's train split, no test id
    with pytest.raises(DatasetError, match="holds the target"):
        synthesis_datalist(target, pool=[sample_dataset, target])


def test_transfer_set_reaches_the_target_size_with_a_manifest(sample_dataset, tmp_path):
    unet = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    save_unet(EMAWeights(unet), scheduler, tmp_path / "model")
    real = synthesis_datalist(sample_dataset)
    manifest_path = build_transfer_set(sample_dataset, tmp_path / "model", tmp_path / "transfer", len(real) + 5, steps=3, batch_size=4, seed=2)
    manifest = json.loads(manifest_path.read_text())
    files = sorted((tmp_path / "transfer" / "images").iterdir())
    assert len(files) == len(real) + 5 == len(manifest["images"]) and manifest["num_synthetic"] == 5
    test_ids = set(read_split(sample_dataset)["test"])
    for entry in manifest["images"]:
        path = tmp_path / "transfer" / entry["file"]
        assert entry["sha256"] == file_digest(path)
        if entry["source"] == "real":
            assert path.name.removeprefix("real_").split(".")[0] not in test_ids
        else:
            assert entry["seed"] == 2 and entry["model_sha256"] == file_digest(tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors")
            assert np.array(Image.open(path)).shape == (32, 32)  # grey dataset -> grey PNGs


def test_a_matched_transfer_set_gives_its_samples_the_training_images_statistics(sample_dataset, tmp_path):
    save_unet(EMAWeights(tiny_unet()), DDPMScheduler(num_train_timesteps=1000), tmp_path / "model")
    size = len(synthesis_datalist(sample_dataset)) + 4
    raw = json.loads(build_transfer_set(sample_dataset, tmp_path / "model", tmp_path / "raw", size, steps=3, seed=2).read_text())
    matched = json.loads(build_transfer_set(sample_dataset, tmp_path / "model", tmp_path / "matched", size, steps=3, seed=2,
                                            match_statistics=True).read_text())
    assert raw["synthetic_samples"] == SAMPLES_RAW and matched["synthetic_samples"] == SAMPLES_MATCHED
    train_means = real_batch(sample_dataset, n=100).flatten(1).mean(1).numpy()

    def synthetic_means(folder):  # PNG means in the model's [-1, 1] range (the reader's (W, H) order does not matter)
        return np.array([np.asarray(Image.open(p), dtype=np.float64).mean() / 127.5 - 1 for p in sorted((folder / "images").glob("synthetic_*"))])

    def farthest(means):  # the sample whose mean is farthest from every training image's
        return np.abs(means[:, None] - train_means[None]).min(1).max()

    assert farthest(synthetic_means(tmp_path / "matched")) < 0.01 < farthest(synthetic_means(tmp_path / "raw"))


def test_quality_report_writes_grid_histograms_fid_and_the_memorisation_check(hc18, tmp_path):
    real = real_batch(hc18, 12)
    report = quality_report(real, torch.rand(10, 1, 32, 32) * 2 - 1, tmp_path)
    assert report["fid"] > 0 and "random initialisation" in report["feature_network"]
    same = quality_report(real, real.clone(), tmp_path / "same")
    assert same["fid"] < report["fid"]
    assert report["memorisation"]["share_copied"] == 0 and same["memorisation"]["share_copied"] == 1  # copies of the real set
    assert same["recall"] == 1.0 and report["two_sample_accuracy"] > same["two_sample_accuracy"]
    assert (tmp_path / "samples_grid.png").is_file() and (tmp_path / "histograms.png").is_file()
    with pytest.raises(ValueError, match="at least 4 real and 4 synthetic images, got 3 real"):  # not a torch error from k-NN
        quality_report(real[:3], real[3:9], tmp_path / "three")


def test_quality_report_on_stand_in_features_names_the_stand_in_and_bounds_the_two_sample_test(hc18, tmp_path):
    from tskd_components.foundation import build_promptable_sam, save_standin

    save_standin(build_promptable_sam("tiny", 64), tmp_path / "standin", {"sam_variant": "tiny", "image_size": 64, "pool": ["x"], "steps": 0})
    report = quality_report(real_batch(hc18, 12), torch.rand(10, 1, 32, 32) * 2 - 1, tmp_path / "q", standin_checkpoint=tmp_path / "standin" / "standin.pth")
    standin = report["standin"]
    assert standin["sha256"] == json.loads((tmp_path / "standin" / "standin.json").read_text())["sha256"]
    low, high = standin["two_sample_ci95"]
    assert report["two_sample_folds"] == 5 and standin["two_sample_held_out"] == 20 and low <= standin["two_sample_accuracy"] <= high and low < 0.9  # 20 predictions: even all right cannot show more than 0.84
    assert 0 < standin["fid_floor"] and 0 < report["fid_floor"] < report["fid"]  # two halves of the real images score below noise
