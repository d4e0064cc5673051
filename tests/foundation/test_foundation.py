"""The foundation stand-in: official SAM keys, pool disjoint from the targets, prompts and a promptable step that learns."""

import pytest
import torch
from ignite.engine import Engine
from segment_anything import sam_model_registry
from segment_anything.build_sam import _build_sam

from tests.conftest import SAMPLE
from tskd_components.data.dataset import DatasetError
from tskd_components.foundation import (PromptableStep, balanced_sampler, box_prompt_dice, build_promptable_sam, mask_box, prompt_masks,
                                        random_point, resolve_pool, save_standin)
from tskd_components.networks import build_lora_sam, sam_hidden_layers


def test_vit_b_shape_is_the_official_model_key_for_key():
    ours, official = build_promptable_sam("vit_b", 1024).state_dict(), sam_model_registry["vit_b"]().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in official.items()}


def test_standin_checkpoint_has_the_official_keys_and_loads_as_a_sam_checkpoint(tmp_path):
    torch.manual_seed(0)
    standin = build_promptable_sam("standin", 64)
    path = save_standin(standin, tmp_path, {"pool": ["drive"]})
    saved = torch.load(path, weights_only=True)
    official = _build_sam(384, 12, 6, [2, 5, 8, 11]).state_dict()  # the same shape as segment-anything builds it
    assert set(saved) == set(official)
    encoder = sum(v.numel() for k, v in saved.items() if k.startswith("image_encoder."))
    assert encoder > 3 * 5.5e6  # >= 3x the ViT-Tiny encoder
    teacher = build_lora_sam("standin", 2, 64, sam_checkpoint=path)  # the path every downstream stage takes
    loaded = teacher.sam.image_encoder.blocks[3].attn.qkv.base_layer.weight
    assert torch.equal(loaded, saved["image_encoder.blocks.3.attn.qkv.weight"]) and not loaded.requires_grad
    assert sam_hidden_layers("standin") == (2, 5, 8, 11)
    assert (tmp_path / "standin.json").is_file()


def test_the_same_weights_saved_twice_have_the_same_sha256(tmp_path):
    """Every report names its teacher by the checkpoint's SHA-256: a save must not put its temp file's name inside."""
    import json

    torch.manual_seed(0)
    standin = build_promptable_sam("standin", 64)
    hashes = [json.loads((save_standin(standin, tmp_path / d, {}).parent / "standin.json").read_text())["sha256"] for d in ("a", "b")]
    assert hashes[0] == hashes[1]


def test_a_target_in_the_pool_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"target dataset\(s\) \['hc18'\] are in the pre-training pool"):
        resolve_pool(SAMPLE.parent, ["hc18"], ["hc18"])
    with pytest.raises(DatasetError, match="no pool datasets"):
        resolve_pool(SAMPLE.parent, ["hc18"])  # the sample root holds the target only


def test_prompts_come_from_the_object():
    mask = torch.zeros(32, 40, dtype=torch.bool)
    mask[5:9, 10:20] = True
    assert mask_box(mask).tolist() == [10.0, 5.0, 20.0, 9.0]  # x0, y0, x1, y1 with x along the last axis
    for _ in range(20):
        x, y = random_point(mask).tolist()
        assert mask[int(y), int(x)]


def test_promptable_training_learns_to_segment_a_boxed_object():
    torch.manual_seed(0)
    sam = build_promptable_sam("tiny", 64)
    images = torch.randn(4, 3, 64, 64) * 0.1
    labels = torch.zeros(4, 1, 64, 64)
    for i, (y, x) in enumerate([(8, 8), (30, 20), (12, 36), (36, 40)]):
        labels[i, 0, y:y + 20, x:x + 16] = 1
        images[i, :, y:y + 20, x:x + 16] += 1.5  # a bright object on a dark background
    engine = Engine(PromptableStep(seed=0))
    engine.network, engine.optimizer = sam, torch.optim.AdamW(sam.parameters(), lr=3e-3)
    engine.state.device = torch.device("cpu")
    items = [{"image": images[i], "label": labels[i], "dataset": "squares"} for i in range(4)]
    identity = lambda d: d
    before = box_prompt_dice(sam, items, identity)["mean_dice"]
    for _ in range(60):
        engine._process_function(engine, {"image": images, "label": labels})
    after = box_prompt_dice(sam, items, identity)["mean_dice"]
    assert after > 0.8 and after > before + 0.3
    logits, iou = prompt_masks(sam.eval(), sam.image_encoder(images[:1]), point=torch.tensor([20.0, 20.0]))
    assert logits.shape == (3, 64, 64) and iou.shape == (3,)  # a point gives SAM's three ambiguity-aware masks


def test_balanced_sampler_draws_each_pool_dataset_equally_often():
    items = [{"dataset": "big"}] * 90 + [{"dataset": "small"}] * 10
    draws = [items[i]["dataset"] for _ in range(20) for i in balanced_sampler(items, seed=0)]
    share = draws.count("small") / len(draws)
    assert len(draws) == 2000 and abs(share - 0.5) < 0.04  # 0.10 without balancing
    assert list(balanced_sampler(items, seed=3)) == list(balanced_sampler(items, seed=3))
