import copy

import torch
from ignite.engine import Engine
from monai.transforms import Compose

from tskd_components.data import load_transfer_set, preprocessing
from tskd_components.distill import TeacherCache, build_teacher_cache
from tskd_components.distill import DistillationStep, TeacherTargetsd, distillation_augmentation
from tskd_components.distill import TaskSpecificKDLoss
from tskd_components.networks import ViTSegmenter, build_lora_sam


def engine_for(student, loss):
    engine = Engine(lambda e, b: None)
    engine.network, engine.loss_function = student, loss
    engine.optimizer = torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.0)
    engine.state.device = torch.device("cpu")
    return engine


def test_cached_and_online_runs_give_the_same_loss(hc18, tmp_path):
    torch.manual_seed(0)
    teacher = build_lora_sam("tiny", 2, 64, random_init=True).eval()
    layers = [0, 1, 2, 3]
    items = load_transfer_set(hc18)[:4]
    pre = preprocessing(64, channels=3, with_label=False)
    build_teacher_cache(teacher, items, pre, tmp_path / "cache", "t", layers, logits_size=64, dtype="float32")
    cache = TeacherCache(tmp_path / "cache", "t", layers)
    cached = Compose([pre, TeacherTargetsd(cache)])
    batch_cached = {k: torch.stack([torch.as_tensor(cached(dict(it))[k]) for it in items]) for k in ("image", "teacher_hidden", "teacher_logits")}
    batch_online = {"image": batch_cached["image"]}

    student = ViTSegmenter(64, 3, 2, depth=4, feature_size=8)
    loss = TaskSpecificKDLoss(192, 64, num_layers=4)
    out_cached = DistillationStep()(engine_for(copy.deepcopy(student), copy.deepcopy(loss)), batch_cached)
    out_online = DistillationStep(teacher, layers)(engine_for(copy.deepcopy(student), copy.deepcopy(loss)), batch_online)
    torch.testing.assert_close(out_cached["loss"], out_online["loss"], rtol=1e-4, atol=1e-5)
    assert set(out_cached) == {"loss", "features", "predictions", "kl", "feature_0", "feature_1", "feature_2", "feature_3"}


def test_training_step_moves_student_and_projections_not_teacher(hc18):
    torch.manual_seed(0)
    teacher = build_lora_sam("tiny", 2, 64, random_init=True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = ViTSegmenter(64, 3, 2, depth=4, feature_size=8)
    loss = TaskSpecificKDLoss(192, 64, num_layers=4)
    engine = engine_for(student, loss)
    engine.optimizer = torch.optim.AdamW(list(student.parameters()) + list(loss.parameters()), lr=1e-3)
    step = DistillationStep(teacher, [0, 1, 2, 3])
    images = torch.randn(2, 3, 64, 64)
    w_student = student.encoder.blocks[0].attn.qkv.weight.clone()
    w_proj = loss.features.projections[0].weight.clone()
    losses = [step(engine, {"image": images})["loss"].item() for _ in range(5)]
    assert losses[-1] < losses[0]
    assert not torch.equal(w_student, student.encoder.blocks[0].attn.qkv.weight)
    assert not torch.equal(w_proj, loss.features.projections[0].weight)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_flips_stay_consistent_between_image_and_cached_targets():
    aug = distillation_augmentation(cached=True, prob=1.0)
    aug.set_random_state(0)
    ramp = torch.arange(16.0).view(1, 4, 4)
    data = {"image": ramp.clone(), "teacher_hidden": ramp.repeat(3, 1, 1), "teacher_logits": ramp.repeat(2, 1, 1)}
    out = aug(data)
    flipped = torch.flip(ramp, dims=(1, 2))
    assert torch.equal(torch.as_tensor(out["teacher_hidden"])[0], flipped[0])
    assert torch.equal(torch.as_tensor(out["teacher_logits"])[1], flipped[0])
    assert torch.corrcoef(torch.stack([torch.as_tensor(out["image"]).flatten(), flipped.flatten()]))[0, 1] > 0.9
