import math

import pytest
import torch
import torch.nn.functional as F

from tskd_components.distill import FeatureAlignment, PredictionAlignment, TaskAgnosticKDLoss, TaskSpecificKDLoss


def identity_projection(align: FeatureAlignment) -> None:
    """Make each 1x1 projection copy the student channels into the first teacher channels."""
    with torch.no_grad():
        for proj in align.projections:
            proj.weight.zero_()
            proj.bias.zero_()
            for c in range(proj.in_channels):
                proj.weight[c, c] = 1.0


@pytest.mark.parametrize("loss", ["mse", "smooth_l1", "cosine"])
def test_feature_loss_is_zero_when_student_equals_teacher_after_projection(loss):
    align = FeatureAlignment(8, 8, 2, loss=loss)
    identity_projection(align)
    student = [torch.randn(2, 8, 4, 4) for _ in range(2)]
    total, parts = align(student, [s.clone() for s in student])
    assert total.item() == pytest.approx(0.0, abs=1e-6) and set(parts) == {"feature_0", "feature_1"}


def test_feature_loss_known_value_weights_and_grid_resize():
    align = FeatureAlignment(1, 1, 2, loss="mse", layer_weights=[1.0, 3.0], normalize=False)
    identity_projection(align)
    student = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)]
    teacher = [torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 1.0)]  # second pair: 4x4 student -> 2x2 grid
    total, parts = align(student, teacher)
    assert parts["feature_0"].item() == pytest.approx(4.0) and parts["feature_1"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx((1 * 4.0 + 3 * 1.0) / 4)
    with pytest.raises(ValueError, match="expects 2 layer pairs"):
        align(student[:1], teacher[:1])


def test_kl_has_the_known_value():
    pred = PredictionAlignment(temperature=1.0)
    student = torch.zeros(1, 2, 1, 1)  # p = (0.5, 0.5)
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # q = (0.75, 0.25)
    total, parts = pred(student, teacher)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    t2, _ = PredictionAlignment(temperature=2.0)(student, teacher)
    q = torch.softmax(teacher.flatten() / 2, 0)
    assert t2.item() == pytest.approx(4 * float((q * (q / 0.5).log()).sum()), rel=1e-5)
    assert PredictionAlignment()(teacher.expand(1, 2, 3, 3).clone(), teacher)[0].item() == pytest.approx(0.0, abs=1e-6)


def test_prediction_dice_and_low_resolution_teacher():
    pred = PredictionAlignment(temperature=1.0, dice_weight=1.0)
    teacher = torch.randn(2, 3, 4, 4)
    student = F.interpolate(teacher, size=(8, 8), mode="bilinear", align_corners=False)
    total, parts = pred(student, teacher)
    assert parts["kl"].item() == pytest.approx(0.0, abs=1e-5) and 0 < parts["dice"].item() < 1


def test_ts_kd_sums_parts_and_gradients_reach_only_student_and_projections():
    loss = TaskSpecificKDLoss(8, 16, num_layers=2, feature_weight=0.5, prediction_weight=2.0)
    student_feat = [torch.randn(2, 8, 4, 4, requires_grad=True) for _ in range(2)]
    teacher_feat = [torch.randn(2, 16, 4, 4, requires_grad=True) for _ in range(2)]
    student_logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    teacher_logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    total, parts = loss(student_feat, teacher_feat, student_logits, teacher_logits)
    assert total.item() == pytest.approx(0.5 * parts["features"].item() + 2.0 * parts["predictions"].item(), rel=1e-5)
    total.backward()
    assert all(s.grad is not None for s in student_feat) and student_logits.grad is not None
    assert all(t.grad is None for t in teacher_feat) and teacher_logits.grad is None
    assert all(p.grad is not None for p in loss.parameters())
    with pytest.raises(ValueError, match="features only"):
        loss(student_feat, teacher_feat, student_logits, None)


def test_ta_kd_uses_features_only():
    loss = TaskAgnosticKDLoss(8, 16, num_layers=1)
    total, parts = loss([torch.randn(1, 8, 2, 2)], [torch.randn(1, 16, 2, 2)], torch.randn(1, 2, 4, 4), None)
    assert set(parts) == {"features", "feature_0"} and total.item() == parts["features"].item()
