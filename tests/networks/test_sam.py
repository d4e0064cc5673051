import pytest
import torch
import torch.nn.functional as F

from tskd_components.networks import SAM_VARIANTS, PromptFreeSAM, SamSpec, build_lora_sam, build_prompt_free_sam, register_sam_variant
from tskd_components.networks import evenly_spaced_blocks, sam_hidden_layers


def test_registry_gives_shapes_and_distillation_layers():
    assert sam_hidden_layers("vit_b") == (2, 5, 8, 11) == evenly_spaced_blocks(12)
    assert sam_hidden_layers("small") == evenly_spaced_blocks(SAM_VARIANTS["small"].depth) == (0, 2, 3, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_sam_variant("vit_b", SamSpec(8, 1, 1, (0,)))
    with pytest.raises(ValueError, match="cannot pick 4 blocks out of 2"):
        evenly_spaced_blocks(2)


def test_official_checkpoint_is_resized_to_a_new_input_size_and_class_count(tmp_path):
    torch.manual_seed(0)
    official = PromptFreeSAM(SAM_VARIANTS["tiny"], num_classes=4, image_size=128)  # 8x8 grid, 4 mask tokens like SAM
    torch.save(official.state_dict(), tmp_path / "sam_tiny.pth")
    model = build_prompt_free_sam("tiny", num_classes=6, image_size=64, checkpoint=tmp_path / "sam_tiny.pth")
    pos = official.image_encoder.pos_embed.permute(0, 3, 1, 2)
    expected = F.interpolate(pos, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(model.image_encoder.pos_embed, expected)
    g = SAM_VARIANTS["tiny"].global_attn_indexes[0]
    assert model.image_encoder.blocks[g].attn.rel_pos_h.shape[0] == 2 * 4 - 1
    assert official.image_encoder.blocks[g].attn.rel_pos_h.shape[0] == 2 * 8 - 1
    tokens = model.mask_decoder.mask_tokens.weight
    assert torch.equal(tokens[5], official.mask_decoder.mask_tokens.weight[1])  # class 5 starts from token 5 mod 4
    assert torch.equal(model.mask_decoder.output_hypernetworks_mlps[4].layers[0].weight, official.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight)
    assert torch.equal(model.image_encoder.blocks[0].attn.qkv.weight, official.image_encoder.blocks[0].attn.qkv.weight)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 6, 64, 64)


def test_missing_checkpoint_names_the_expected_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sam_vit_b_01ec64.pth.*pass its path as sam_checkpoint.*random_init"):
        build_lora_sam("vit_b", 2, 256, sam_checkpoint=tmp_path / "sam_vit_b.pth")
    with pytest.raises(ValueError, match="unknown SAM variant 'vit_s'"):
        build_prompt_free_sam("vit_s", random_init=True)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    from tskd_components.networks import create_student

    torch.save({"model": create_student("vit_tiny", image_size=64, depth=2, hidden_indices=(0, 0, 1, 1)).state_dict()}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt is not a SAM tiny checkpoint: only 0 of the \d+ tensors"):
        build_lora_sam("tiny", 2, 64, sam_checkpoint=tmp_path / "model.pt")
