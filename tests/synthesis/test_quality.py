"""Synthetic-image quality: k-NN precision / recall, the classifier two-sample test, the memorisation check."""

import json

import pytest
import torch
from monai.data import Dataset

from tskd_components.data import load_datalist
from tskd_components.synthesis.diffusion import diffusion_preprocessing, synthesis_datalist
from tskd_components.synthesis.quality import frechet_distance, frechet_floor, knn_precision_recall, memorisation, two_sample_accuracy, two_sample_interval
from tskd_components.synthesis.report import feature_network, features


def images(items, size=64):
    return torch.stack([item["image"] for item in Dataset(items, diffusion_preprocessing(size, 1, augment=False))])


def test_memorisation_flags_a_training_image_passed_off_as_synthetic(hc18):
    train = images(synthesis_datalist(hc18)[:12])
    unseen = images(load_datalist(hc18, "val")[:1])  # a real image the model never trained on
    synthetic = torch.cat([(train[5] + 0.01 * torch.randn_like(train[5])).clamp(-1, 1)[None], torch.rand_like(unseen) * 2 - 1, unseen])
    net, _ = feature_network()
    result = memorisation(synthetic, train, features(net, synthetic), features(net, train))
    assert result["copied"] == [0] and result["nearest_train_index"][0] == 5
    assert result["ssim"][0] > 0.95 and max(result["ssim"][1:]) < result["ssim_threshold"]
    assert result["share_copied"] == pytest.approx(1 / 3)


def test_two_sample_test_reads_chance_for_one_distribution_and_certainty_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    assert 0.4 <= two_sample_accuracy(a, b) <= 0.6
    assert two_sample_accuracy(a, b + 1.5) >= 0.95


def test_two_sample_test_holds_out_every_image_once_so_no_split_decides_it():
    """Cross-validation: a set with a few far-off synthetic points reads the same share of them however it is shuffled;
    one half-split would hold out a varying number of them."""
    g = torch.Generator().manual_seed(2)
    real, synthetic = torch.randn(40, 4, generator=g), torch.randn(40, 4, generator=g)
    synthetic[:10] += 8.0  # 10 of 40 synthetic images are obvious, the rest indistinguishable
    accuracies = [two_sample_accuracy(real, synthetic, seed=s) for s in range(8)]
    # ~0.69 (10 + half of the other 70 right); one random half-split ranged 0.50-0.75 over these 8 seeds
    assert all(0.55 <= a <= 0.8 for a in accuracies) and max(accuracies) - min(accuracies) < 0.15
    with pytest.raises(ValueError, match="at least 2 real and 2 synthetic"):
        two_sample_accuracy(real[:1], synthetic)


def test_two_sample_interval_says_when_64_samples_cannot_tell_a_goal_from_a_miss():
    low, high = two_sample_interval(0.859375, 64)  # 55 of 64 held-out images right: hc18's pool_then_target
    assert 0.75 < low < 0.77 and 0.92 < high < 0.94  # the 0.80 goal lies inside: 64 samples cannot settle it
    low, high = two_sample_interval(0.75, 1000)
    assert 0.72 < low < 0.75 < high < 0.78  # many samples: narrow


def test_two_sample_test_on_images_halves_of_the_real_set_and_noise(hc18):
    items = synthesis_datalist(hc18)
    if len(items) < 100:
        pytest.skip("needs the full HC18 train split (../shared/data/hc18)")
    net, _ = feature_network()
    real = features(net, images(items))
    noise = features(net, torch.rand(len(items) // 2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    half = len(real) // 2
    assert 0.3 <= two_sample_accuracy(real[:half], real[half:]) <= 0.7  # two halves of one set: chance
    assert two_sample_accuracy(real[:half], noise) >= 0.95


def test_precision_recall_and_frechet_distance_separate_matching_from_shifted_sets():
    g = torch.Generator().manual_seed(1)
    real, same, shifted = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 3
    matching = knn_precision_recall(real, same)
    assert matching["precision"] > 0.8 and matching["recall"] > 0.8
    far = knn_precision_recall(real, shifted)
    assert far["precision"] < 0.1 and far["recall"] < 0.1
    assert frechet_distance(real, same) < 1.0
    assert frechet_distance(real, shifted) == pytest.approx(8 * 3**2, rel=0.2)  # a mean shift of 3 in 8 dimensions


def test_frechet_floor_is_the_distance_real_images_score_at_that_sample_size():
    g = torch.Generator().manual_seed(2)
    many, few = torch.randn(400, 16, generator=g), torch.randn(40, 16, generator=g)
    assert frechet_floor(many) < 1.0 < frechet_floor(few)  # 20 per half in 16 dimensions: the fits alone keep it above 0
    assert frechet_floor(few) < frechet_distance(few, torch.randn(40, 16, generator=g) + 1.5)  # a shifted set scores above it
    assert frechet_floor(few, seed=3) == frechet_floor(few, seed=3) != frechet_floor(few, seed=4)
    with pytest.raises(ValueError, match="at least 4"):
        frechet_floor(few[:3])


def test_standin_features_come_from_the_stand_in_encoder(tmp_path):
    from tskd_components.foundation import build_promptable_sam, save_standin
    from tskd_components.synthesis.quality import StandinFeatures

    sam = build_promptable_sam("tiny", 64)
    save_standin(sam, tmp_path, {"sam_variant": "tiny", "image_size": 64, "pool": ["x"], "steps": 0})
    encoder = StandinFeatures(tmp_path / "standin.pth")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    grey = (x + 1) / 2
    expected = sam.image_encoder((torch.nn.functional.interpolate(grey.repeat(1, 3, 1, 1), size=(64, 64), mode="bilinear") - encoder.mean) / encoder.std)
    assert torch.allclose(encoder(x), expected.mean(dim=(2, 3)), atol=1e-5)
    assert encoder.sha256 == json.loads((tmp_path / "standin.json").read_text())["sha256"]  # reports name their stand-in
    with pytest.raises(FileNotFoundError, match="sam.pth not found"):
        StandinFeatures(tmp_path / "elsewhere" / "sam.pth")
