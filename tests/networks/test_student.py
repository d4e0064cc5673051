import pytest
import timm
import torch
from safetensors.torch import save_file

from tskd_components.networks import ViTSegmenter, create_student, init_student, list_students, load_student_weights, require_trained_student
from tskd_components.networks.student import evenly_spaced_blocks


def small(**kw) -> ViTSegmenter:
    args = dict(image_size=64, in_channels=3, num_classes=3, depth=4, feature_size=8) | kw
    return ViTSegmenter(**args)


def test_vit_tiny_defaults_and_shapes():
    model = ViTSegmenter(image_size=256, num_classes=4)
    enc = model.encoder
    assert (enc.embed_dim, len(enc.blocks), enc.blocks[0].attn.num_heads, enc.patch_embed.patch_size) == (192, 12, 3, (16, 16))
    assert model.hidden_indices == (2, 5, 8, 11)
    assert 5.4e6 < sum(p.numel() for p in enc.parameters()) < 5.7e6  # ViT-Tiny
    x = torch.randn(1, 3, 256, 256)
    logits, hidden = model.forward_with_hidden(x)
    assert logits.shape == (1, 4, 256, 256)
    assert [h.shape for h in hidden] == [(1, 192, 16, 16)] * 4
    assert torch.allclose(model(x), logits)


def test_hidden_states_are_the_chosen_blocks():
    model = small(hidden_indices=(0, 1, 2, 3)).eval()
    x = torch.randn(2, 3, 64, 64)
    hidden = model.forward_hidden(x)
    tokens = model.encoder.patch_embed(x)
    tokens = model.encoder._pos_embed(tokens)
    for i, block in enumerate(model.encoder.blocks):
        tokens = block(tokens)
        grid = tokens[:, 1:].transpose(1, 2).reshape(2, 192, 4, 4)
        assert torch.allclose(hidden[i], grid, atol=1e-5)


@pytest.mark.parametrize("indices", [(0, 1, 2, 3), (0, 2, 3, 3)])
def test_hidden_states_equal_timms_forward_intermediates(indices):
    model = small(hidden_indices=indices).eval()
    x = torch.randn(2, 3, 64, 64)
    timm_hidden = model.encoder.forward_intermediates(x, indices=list(model.hidden_indices), output_fmt="NCHW", intermediates_only=True)
    by_block = dict(zip(sorted(set(indices)), timm_hidden))  # timm returns each block once
    hidden = model.forward_hidden(x)
    assert len(hidden) == 4 and all(torch.equal(h, by_block[i]) for h, i in zip(hidden, indices))


TEST_SIZE = {"vit_tiny": {"depth": 4}, "tiny_vit_5m": {"depths": (1, 1, 1, 1)}}  # every registered variant, test-sized


def test_every_registered_variant_has_a_test_size():
    assert sorted(TEST_SIZE) == list_students()


@pytest.mark.parametrize("name", list_students())
def test_every_student_variant_scripts_with_torchscript(name):
    model = create_student(name, image_size=64, num_classes=3, **TEST_SIZE[name]).eval()
    scripted = torch.jit.script(model)  # the model zoo's default ckpt_export mode
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(scripted(x), model(x), atol=1e-5)
    logits, hidden = scripted(x, return_hidden=True)
    assert logits.shape == (1, 3, 64, 64) and len(hidden) == 4


def test_grey_input_and_bad_configs():
    assert small(in_channels=1)(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    assert evenly_spaced_blocks(12) == (2, 5, 8, 11)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        small(image_size=70)
    with pytest.raises(ValueError, match="hidden_indices must name 4 blocks"):
        small(hidden_indices=(0, 1, 9, 10))


def test_weights_round_trip_and_report(tmp_path):
    src = small()
    save_file(src.state_dict(), tmp_path / "student.safetensors")
    dst = small()
    report = load_student_weights(dst, tmp_path / "student.safetensors")
    assert not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(src.eval()(x), dst.eval()(x))


def test_encoder_only_checkpoint_with_other_classes(tmp_path):
    src = small(num_classes=5)
    torch.save({"model": {k: v for k, v in src.state_dict().items() if k.startswith("encoder.")}}, tmp_path / "enc.pt")
    dst = small(num_classes=3)
    report = load_student_weights(dst, tmp_path / "enc.pt")
    assert report.missing and all(k.startswith("decoder.") for k in report.missing)
    assert not report.missing_encoder
    assert torch.equal(dst.encoder.blocks[0].attn.qkv.weight, src.encoder.blocks[0].attn.qkv.weight)


def test_timm_vit_tiny_state_dict_maps_under_encoder_with_pos_embed_resampled(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000)
    torch.save(vit.state_dict(), tmp_path / "vit_tiny.pth")
    model = ViTSegmenter(image_size=64, num_classes=2)
    report = load_student_weights(model, tmp_path / "vit_tiny.pth")
    assert not report.missing_encoder
    assert sorted(report.unexpected) == ["encoder.head.bias", "encoder.head.weight"]
    assert model.encoder.pos_embed.shape == (1, 1 + 16, 192)
    assert torch.equal(model.encoder.blocks[5].mlp.fc1.weight, vit.blocks[5].mlp.fc1.weight)


def test_mismatched_and_missing_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file .*nope.safetensors not found"):
        init_student(small(), tmp_path / "nope.safetensors")
    save_file({"foo.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="holds no tensor that fits the student"):
        load_student_weights(small(), tmp_path / "other.safetensors")
    save_file({k: v for k, v in small(depth=2, hidden_indices=(0, 0, 1, 1)).state_dict().items()}, tmp_path / "shallow.safetensors")
    with pytest.raises(ValueError, match="missing encoder keys.*blocks.2"):
        load_student_weights(small(), tmp_path / "shallow.safetensors")
    assert init_student(small(), "") is not None  # empty path: random init


def test_a_trained_model_of_another_decoder_is_named_with_its_override(tmp_path):
    torch.save({"model": small(decoder="unetr").state_dict()}, tmp_path / "model.pt")
    assert small().decoder.__class__.__name__ == "LightDecoder"  # the default since the student bundle's 0.2.0
    with pytest.raises(ValueError, match="model.pt holds a student with the 'unetr' decoder but the config builds 'light'; run with --decoder unetr"):
        require_trained_student(tmp_path / "model.pt", small(), "train it")
    assert require_trained_student(tmp_path / "model.pt", small(decoder="unetr"), "train it") == str(tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"does not fit .*decoder.out.conv.conv.weight \(3, 8, 1, 1\) vs \(2, 8, 1, 1\)"):
        require_trained_student(tmp_path / "model.pt", small(decoder="unetr", num_classes=2), "train it")
    with pytest.raises(FileNotFoundError, match="absent.pt not found; train it"):
        require_trained_student(tmp_path / "absent.pt", small(), "train it")
