import pytest
import torch
from monai.losses import DiceCELoss

from tests.conftest import real_dataset
from tskd_components.data import load_datalist, preprocessing
from tskd_components.networks import build_lora_sam, load_teacher_weights, save_teacher
from tskd_components.networks import SAM_VARIANTS, AdaptedWeights, PromptFreeSAM, merged_sam


def tiny(num_classes=2, image_size=64, **kw):
    torch.manual_seed(0)
    return build_lora_sam("tiny", num_classes, image_size, random_init=True, **kw)


def real_batch(name="hc18", classes=2, n=4, size=64):
    items = load_datalist(real_dataset(name), "train")[:n]
    pre = preprocessing(size, num_classes=classes, channels=3)
    data = [pre(it) for it in items]
    return torch.stack([d["image"].as_tensor() for d in data]), torch.stack([d["label"].as_tensor() for d in data])


def test_lora_wraps_exactly_the_named_modules():
    depth = SAM_VARIANTS["tiny"].depth
    assert tiny().lora_modules == [f"image_encoder.blocks.{i}.attn.qkv" for i in range(depth)]
    both = tiny(lora_targets=("qkv", "proj")).lora_modules
    assert both == [f"image_encoder.blocks.{i}.attn.{m}" for i in range(depth) for m in ("qkv", "proj")]
    dec = [m for m in tiny(decoder_mode="lora").lora_modules if m.startswith("mask_decoder")]
    assert dec and all(m.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "out_proj") for m in dec)
    assert all(m.startswith("mask_decoder.transformer.") for m in dec)


@pytest.mark.parametrize("decoder_mode", ["full", "lora"])
def test_only_lora_and_decoder_train(decoder_mode):
    model = tiny(decoder_mode=decoder_mode)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any(n.startswith("sam.mask_decoder.") for n in trainable)
    assert all("lora_" in n or n.startswith("sam.mask_decoder.") for n in trainable)
    frozen_decoder = [n for n, p in model.named_parameters() if n.startswith("sam.mask_decoder.") and not p.requires_grad]
    assert (decoder_mode == "full") == (not frozen_decoder)


def test_vit_b_rank4_trainable_fraction():
    model = build_lora_sam("vit_b", 2, 256, random_init=True, lora_rank=4, decoder_mode="lora")
    counts = model.parameter_counts()
    assert 89e6 < counts["total"] < 92e6
    assert counts["fraction"] <= 0.01
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and "image_encoder" in n)
    assert lora == 12 * 4 * (768 + 3 * 768)  # A: r x 768, B: 2304 x r per block


def test_training_steps_reduce_loss_on_a_real_batch():
    model = tiny()
    images, labels = real_batch()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    frozen_before = model.sam.image_encoder.blocks[0].attn.qkv.base_layer.weight.clone()
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert torch.equal(frozen_before, model.sam.image_encoder.blocks[0].attn.qkv.base_layer.weight)


def test_multi_class_output_and_hidden_states():
    images, _ = real_batch("acdc", classes=4, n=2)
    model = tiny(num_classes=4).eval()
    logits, hidden = model.forward_with_hidden(images, (1, 3))
    assert logits.shape == (2, 4, 64, 64)
    assert [h.shape for h in hidden] == [(2, 64, 4, 4)] * 2


def test_save_reload_round_trip_gives_identical_logits(tmp_path):
    model = tiny()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # make the LoRA update non-zero
    images, _ = real_batch(n=2)
    ref = model.eval()(images)
    save_teacher(model, tmp_path / "lora.safetensors")
    save_teacher(model, tmp_path / "merged.safetensors", merged=True)
    same_base = load_teacher_weights(tiny(), tmp_path / "lora.safetensors").eval()
    torch.manual_seed(123)
    other_base = build_lora_sam("tiny", 2, 64, random_init=True, weights=tmp_path / "merged.safetensors").eval()
    assert torch.allclose(same_base(images), ref, atol=1e-5)
    assert torch.allclose(other_base(images), ref, atol=1e-5)
    assert torch.allclose(merged_sam(model).eval()(images), ref, atol=1e-5)
    with pytest.raises(ValueError, match="another LoRA configuration"):
        load_teacher_weights(tiny(lora_targets=("qkv", "proj")), tmp_path / "lora.safetensors")
    assert set(AdaptedWeights(model).state_dict()) == set(model.state_dict())  # random base: everything


def test_checkpoints_of_a_sam_based_teacher_hold_only_the_adapted_part(tmp_path):
    torch.save(PromptFreeSAM(SAM_VARIANTS["tiny"], 4, 64).state_dict(), tmp_path / "sam.pth")
    model = build_lora_sam("tiny", 2, 64, sam_checkpoint=tmp_path / "sam.pth")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(AdaptedWeights(model).state_dict()) == trainable
    assert len(trainable) < len(model.state_dict()) / 2
    encoder = build_lora_sam("tiny", 2, 64, random_init=True, train_encoder=True)
    assert all(p.requires_grad for n, p in encoder.named_parameters() if n.startswith("sam.image_encoder."))
