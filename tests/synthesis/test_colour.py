"""Colour-matched pool pre-training (tskd_components/synthesis/colour.py)."""

import numpy as np
import pytest
import torch

from tskd_components.data import read_split
from tskd_components.synthesis import (
    MatchChannelStatsd,
    assign_references,
    channel_statistics,
    colour_matched,
    diffusion_preprocessing,
    match_channel_statistics,
    match_target_statistics,
    synthesis_datalist,
)
from tskd_components.synthesis.colour import REFERENCE_MEAN, REFERENCE_STD


def test_an_image_takes_the_reference_mean_and_std_of_each_channel():
    # channel 0: a left/right step of -0.5 / +0.5 (mean 0); channel 1: a ramp; channel 2: flat
    img = torch.zeros(3, 4, 4)
    img[0, :, :2], img[0, :, 2:] = -0.5, 0.5
    img[1] = torch.linspace(-1, 1, 16).view(4, 4)
    img[2] = 0.3
    out = MatchChannelStatsd("image")({"image": img, REFERENCE_MEAN: [0.2, -0.1, 0.4], REFERENCE_STD: [0.1, 0.2, 0.3]})["image"]
    # the step becomes 0.2 -/+ 0.1 x (0.5 / its std): its sample std is 0.5 * sqrt(16 / 15)
    step = float(0.1 / np.sqrt(16 / 15))
    assert torch.allclose(out[0, 0, :2], torch.tensor(0.2 - step)) and torch.allclose(out[0, 0, 2:], torch.tensor(0.2 + step))
    assert out[1].mean().item() == pytest.approx(-0.1, abs=1e-6) and out[1].flatten().std().item() == pytest.approx(0.2, abs=1e-6)
    assert torch.equal(out[1].flatten().argsort(), img[1].flatten().argsort())  # order of intensities kept
    assert torch.allclose(out[2], torch.tensor(0.4))  # a flat channel stays flat, at the reference mean


def test_matching_clips_to_the_models_range_and_leaves_unreferenced_items_alone():
    img = torch.linspace(-1, 1, 64).view(1, 8, 8)
    out = MatchChannelStatsd("image")({"image": img, REFERENCE_MEAN: [0.9], REFERENCE_STD: [0.5]})["image"]
    assert out.max().item() == 1.0 and (out == 1.0).sum() > 10 and out.min().item() > 0.0
    assert MatchChannelStatsd("image")({"image": img})["image"] is img
    with pytest.raises(ValueError, match="1 channels but reference statistics for 3"):
        MatchChannelStatsd("image")({"image": img, REFERENCE_MEAN: [0, 0, 0], REFERENCE_STD: [1, 1, 1]})


def test_references_spread_over_the_target_images_and_are_deterministic():
    stats = channel_statistics([torch.full((1, 2, 2), float(v)) + torch.tensor([[[0.0, 0.1], [0.0, 0.1]]]) for v in range(5)])
    assert stats.shape == (5, 2, 1) and stats[3, 0, 0] == pytest.approx(3.05)
    pool = [{"id": f"p{i}", "image": f"p{i}.png"} for i in range(12)]
    a = assign_references(pool, stats, seed=0)
    used = [round(item[REFERENCE_MEAN][0] - 0.05) for item in a]
    assert sorted(np.bincount(used, minlength=5).tolist()) == [2, 2, 2, 3, 3]  # each target image 2 or 3 times
    assert [item["id"] for item in a] == [item["id"] for item in pool] and "reference_mean" not in pool[0]
    assert a == assign_references(pool, stats, seed=0) and a != assign_references(pool, stats, seed=1)
    with pytest.raises(ValueError, match="train split is empty"):
        assign_references(pool, stats[:0])


def test_a_pool_takes_the_colours_of_the_target_training_images_only(sample_dataset, small_copy):
    target = small_copy(sample_dataset, n=3)
    items = synthesis_datalist(target, pool=[sample_dataset], colour_match=True, image_size=16, channels=1, seed=0)
    assert items == colour_matched(synthesis_datalist(target, pool=[sample_dataset]), target, image_size=16, channels=1, seed=0)
    pre = diffusion_preprocessing(16, 1, augment=False)
    train = channel_statistics([pre(dict(item))["image"] for item in synthesis_datalist(target)])
    test = channel_statistics([pre({"id": i, "image": str(target / "images" / f"{i}.png")})["image"] for i in read_split(target)["test"]])
    means = {round(item[REFERENCE_MEAN][0], 6) for item in items}
    assert means <= {round(m, 6) for m in train[:, 0, 0]} and not means & {round(m, 6) for m in test[:, 0, 0]}
    matched = pre(dict(items[0]))["image"]  # the preprocessing applies each item's reference
    assert matched.mean().item() == pytest.approx(items[0][REFERENCE_MEAN][0], abs=0.02)
    assert matched.flatten().std().item() == pytest.approx(items[0][REFERENCE_STD][0], abs=0.02)
    with pytest.raises(ValueError, match="include .* own images; set a pool"):
        synthesis_datalist(target, colour_match=True, image_size=16)


def test_samples_take_the_statistics_of_the_target_training_images(sample_dataset, small_copy):
    target = small_copy(sample_dataset, n=3)
    pre = diffusion_preprocessing(16, 1, augment=False)
    train = channel_statistics([pre(dict(item))["image"] for item in synthesis_datalist(target)])
    test = channel_statistics([pre({"id": i, "image": str(target / "images" / f"{i}.png")})["image"] for i in read_split(target)["test"]])
    # two-level samples, ~20% bright like the ultrasound images (so that no value is clipped after matching), each its
    # own pattern: 6 samples over 3 training images
    samples = (torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.8).float() * 0.4 - 0.3
    matched = match_target_statistics(samples, target, seed=0)
    got = channel_statistics(matched)
    # each sample has one training image's mean and std (not a test image's) and keeps its own pattern; every
    # training image serves twice
    nearest = [int(np.abs(train[:, 0, 0] - m).argmin()) for m in got[:, 0, 0]]
    assert np.allclose(got, train[nearest], atol=1e-5) and sorted(np.bincount(nearest).tolist()) == [2, 2, 2]
    assert not {round(m, 4) for m in got[:, 0, 0]} & {round(m, 4) for m in test[:, 0, 0]}
    assert all(torch.equal(m > m.mean(), s > s.mean()) for m, s in zip(matched, samples))
    assert torch.equal(matched, match_target_statistics(samples, target, seed=0))
    assert torch.equal(matched, match_target_statistics(samples, target, seed=0, statistics=train))  # statistics the caller has
    assert not torch.equal(matched, match_target_statistics(samples, target, seed=1))
    flat = match_target_statistics(torch.zeros(2, 1, 16, 16), target, seed=0)  # a flat sample stays flat, at a training mean
    assert flat.flatten(1).std(1).max().item() == 0.0 and np.isin(flat.flatten(1)[:, 0].numpy(), train[:, 0, 0].astype(np.float32)).all()


def test_channel_matching_is_one_function_for_pool_images_and_samples():
    img = torch.linspace(-1, 1, 48).view(3, 4, 4)
    by_transform = MatchChannelStatsd("image")({"image": img, REFERENCE_MEAN: [0.1, 0.2, 0.3], REFERENCE_STD: [0.2, 0.1, 0.05]})["image"]
    assert torch.equal(by_transform, match_channel_statistics(img, [0.1, 0.2, 0.3], [0.2, 0.1, 0.05]))
