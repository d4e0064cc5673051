import timm
import torch
from ignite.engine import Engine
from monai.transforms import Compose

from tests.conftest import real_dataset
from tskd_components.data import load_transfer_set, preprocessing
from tskd_components.networks import ViTSegmenter, export_student, load_student_weights
from tskd_components.ssl import MAE, MoCoV3, SSLStep, TwoViewsd, cosine_momentum, patchify, random_masking, view_augmentation


def student(size=64):
    torch.manual_seed(0)
    return ViTSegmenter(size, 3, 2, depth=4, feature_size=8)


def real_images(n=8, size=64, views=False):
    pre = preprocessing(size, channels=3, with_label=False)
    steps = [pre, TwoViewsd(view_augmentation(size)).set_random_state(0)] if views else [pre]
    data = [Compose(steps)(dict(it)) for it in load_transfer_set(real_dataset("hc18"))[:n]]
    keys = ("view1", "view2") if views else ("image",)
    return {k: torch.stack([torch.as_tensor(d[k]) for d in data]) for k in keys}


def trainer_for(model, lr):
    engine = Engine(SSLStep())
    engine.network = model
    engine.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    engine.state.device = torch.device("cpu")
    return engine


def test_masking_hides_the_requested_fraction():
    keep, mask = random_masking(3, 64, 0.75, torch.device("cpu"))
    assert keep.shape == (3, 16) and torch.all(mask.sum(1) == 48)
    assert torch.all(mask.gather(1, keep) == 0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert torch.equal(patchify(x, 4)[0, 1], x[0, :, :4, 4:8].permute(1, 2, 0).reshape(-1))
    _, parts = MAE(student(), mask_ratio=0.6)(torch.randn(2, 3, 64, 64))
    assert abs(parts["masked_fraction"].item() - 0.625) < 1e-6  # 10 of 16 patches


def test_mae_loss_falls_on_real_images():
    model = MAE(student())
    batch = real_images()
    engine = trainer_for(model, 1e-3)
    losses = [SSLStep()(engine, batch)["loss"].item() for _ in range(15)]
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3


def test_mocov3_loss_falls_and_momentum_encoder_follows_the_schedule():
    model = MoCoV3(student(), dim=64, mlp_dim=128)
    batch = real_images(views=True)
    engine = trainer_for(model, 1e-3)
    engine.state.max_epochs, engine.state.epoch_length = 1, 20
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    losses = []
    for i in range(1, 13):
        engine.state.iteration = i
        losses.append(SSLStep()(engine, batch)["loss"].item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert model.momentum == cosine_momentum(12 / 20, 0.99)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.momentum_encoder.parameters()))
    assert cosine_momentum(0.0, 0.99) == 0.99 and cosine_momentum(1.0, 0.99) == 1.0
    # one EMA step by hand
    online = model.student.encoder.blocks[0].attn.qkv.weight.detach().clone()
    target = model.momentum_encoder.blocks[0].attn.qkv.weight.clone()
    m = model.update_momentum_encoder(0.5)
    assert torch.allclose(model.momentum_encoder.blocks[0].attn.qkv.weight, m * target + (1 - m) * online)


def test_exported_encoders_load_into_the_student(tmp_path):
    for model in (MAE(student()), MoCoV3(student(), dim=32, mlp_dim=64)):
        path = export_student(model.student, tmp_path / "enc.safetensors", include_decoder=False)
        report = load_student_weights(ViTSegmenter(64, 3, 2, depth=4, feature_size=8), path)
        assert not report.missing_encoder and all(k.startswith("decoder.") for k in report.missing)


def test_imagenet_mae_checkpoint_key_mapping_round_trips(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    state = dict(vit.state_dict()) | {"mask_token": torch.zeros(1, 1, 128), "decoder_embed.weight": torch.zeros(128, 192)}
    torch.save({"model": state}, tmp_path / "mae_pretrain_vit_tiny.pth")  # the MAE repository's layout
    model = ViTSegmenter(224, 3, 2)
    report = load_student_weights(model, tmp_path / "mae_pretrain_vit_tiny.pth")
    assert report.ignored == ["decoder_embed.weight", "mask_token"] and not report.missing_encoder and not report.unexpected
    back = {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert set(back) == set(vit.state_dict()) and all(torch.equal(back[k], v) for k, v in vit.state_dict().items())
