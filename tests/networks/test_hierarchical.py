"""Students on hierarchical backbones: the ViT student's interface from four stages at strides 4-32."""

import pytest
import torch
import torch.nn.functional as F

from tskd_components.distill.losses import FeatureAlignment
from tskd_components.networks import HierarchicalSegmenter, create_student, export_student, init_student
from tskd_components.ssl import MAE


def small(**kw) -> HierarchicalSegmenter:
    return create_student("tiny_vit_5m", image_size=64, num_classes=3, depths=(1, 1, 1, 1), **kw)


def test_hidden_maps_are_the_projected_stages_on_the_16_px_grid():
    model = small().eval()
    x = torch.randn(2, 3, 64, 64)
    stages = model.encoder(x)
    assert [tuple(s.shape[1:]) for s in stages] == [(64, 16, 16), (128, 8, 8), (160, 4, 4), (320, 2, 2)]
    hidden = model.forward_hidden(x)
    assert [tuple(h.shape) for h in hidden] == [(2, 192, 4, 4)] * 4
    assert torch.allclose(hidden[0], F.avg_pool2d(model.neck[0](stages[0]), 4), atol=1e-5)  # 1/4 -> 1/16: mean of 4x4
    assert torch.allclose(hidden[2], model.neck[2](stages[2]), atol=1e-6)  # already at 1/16
    logits, again = model.forward_with_hidden(x)
    assert logits.shape == (2, 3, 64, 64) and all(torch.equal(a, b) for a, b in zip(hidden, again))


def test_the_full_size_student_is_tinyvit_5m_with_the_light_decoder():
    model = create_student("tiny_vit_5m", image_size=256, num_classes=2)
    assert 5.0e6 < sum(p.numel() for p in model.encoder.parameters()) < 5.2e6
    assert type(model.decoder).__name__ == "LightDecoder" and model.grid_size == (16, 16)


def test_distillation_losses_take_its_hidden_maps():
    model = small()
    align = FeatureAlignment(student_dim=model.embed_dim, teacher_dim=64, num_layers=4)
    teacher = [torch.randn(2, 64, 8, 8) for _ in range(4)]  # another grid: projected and resized
    loss, parts = align(model.forward_hidden(torch.randn(2, 3, 64, 64)), teacher)
    loss.backward()
    assert torch.isfinite(loss) and len(parts) == 4 and model.neck[0].weight.grad is not None


def test_weights_round_trip_and_refusals(tmp_path):
    model = small()
    path = export_student(model, tmp_path / "student.safetensors")
    fresh = init_student(small(), str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    encoder_only = init_student(small(), str(export_student(model, tmp_path / "encoder.safetensors", include_decoder=False)))
    assert torch.equal(encoder_only.neck[1].weight, model.neck[1].weight)  # the distilled neck travels with the encoder
    with pytest.raises(ValueError, match="multiple of 32"):
        create_student("tiny_vit_5m", image_size=48, depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="MAE .* pre-trains ViT students only"):
        MAE(model)
