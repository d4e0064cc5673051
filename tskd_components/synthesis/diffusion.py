"""Denoising diffusion (diffusers ``UNet2DModel`` + ``DDPMScheduler``) trained on a task's own training images,
and DDIM sampling of synthetic images that grow the transfer set."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel, compute_snr
from ignite.engine import Engine
from monai.transforms import Compose, EnsureTyped, RandFlipd, Resized, ScaleIntensityd
from PIL import Image
from tqdm import tqdm

from ..data.dataset import DatasetError, load_datalist, read_split
from ..data.transforms import ConvertChannelsd, LoadSliceOrImaged
from .colour import MatchChannelStatsd, colour_matched

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"  # what save_unet writes under the model folder


def build_unet(image_size: int = 64, channels: int = 1, block_out_channels: Sequence[int] = (32, 64, 128, 128),
               layers_per_block: int = 1, attention_levels: Sequence[bool] = (False, False, True, False)) -> UNet2DModel:
    """A diffusers ``UNet2DModel``; ``attention_levels`` puts self-attention at the chosen resolutions."""
    if len(attention_levels) != len(block_out_channels):
        raise ValueError("attention_levels needs one entry per level of block_out_channels")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
    groups = min(32, min(block_out_channels))
    return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels, block_out_channels=tuple(block_out_channels),
                       layers_per_block=layers_per_block, down_block_types=down, up_block_types=up, norm_num_groups=groups)


def init_unet(network: UNet2DModel, initial_weights: str | Path = "") -> UNet2DModel:
    """``network``, with the weights of the UNet that :func:`save_unet` exported to ``initial_weights`` when given (e.g.
    one pre-trained on the pool of other datasets, to fine-tune on the target); the architectures must match."""
    if not initial_weights:
        return network
    pretrained, _ = load_unet(initial_weights)
    keys = ("sample_size", "in_channels", "block_out_channels", "layers_per_block", "down_block_types")
    theirs, ours = ({k: list(c[k]) if isinstance(c[k], (list, tuple)) else c[k] for k in keys} for c in (pretrained.config, network.config))
    if theirs != ours:
        raise ValueError(f"the diffusion UNet in {initial_weights} is {theirs}, this run builds {ours}: pass the pre-training's "
                         "image_size, block_out_channels, layers_per_block and attention_levels (and a target with as many channels)")
    network.load_state_dict(pretrained.state_dict())
    return network


def synthesis_datalist(dataset_dir: str | Path, pool: Sequence[str | Path] = (), colour_match: bool = False, image_size: int = 64,
                       channels: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Image-only items the diffusion model may learn from: the train split (labeled and unlabeled), never test; with
    ``pool`` (dataset folders, e.g. the foundation stand-in's pool) those datasets' train splits instead, to pre-train
    on before the target. A pool that holds the target itself is refused. ``colour_match``: each pool item carries
    the channel statistics of one of the target's training images (at ``image_size``, ``channels``; drawn with
    ``seed``), which :func:`diffusion_preprocessing` gives it (:mod:`.colour`)."""
    if any(Path(d).resolve() == Path(dataset_dir).resolve() for d in pool):
        raise DatasetError(f"the synthesis pool {[str(d) for d in pool]} holds the target {dataset_dir}; pre-train on other datasets")
    items = []
    for folder in pool or [dataset_dir]:
        part = [{k: v for k, v in it.items() if k != "label"} for it in load_datalist(folder, "train", validate=False)]
        assert_no_test_images(part, folder)
        items += part
    return colour_matched(items, dataset_dir, image_size, channels, seed) if colour_match else items


def assert_no_test_images(items: Sequence[Mapping[str, Any]], dataset_dir: str | Path) -> None:
    """Refuse any item whose id or file belongs to the dataset's test split."""
    test_ids = set(read_split(dataset_dir)["test"])
    test_files = {Path(p).resolve() for p in (Path(dataset_dir) / "images").glob("*") if p.name.split(".")[0] in test_ids}
    leaked = [it["image"] for it in items if it["id"] in test_ids or Path(it["image"]).resolve() in test_files]
    if leaked:
        raise DatasetError(f"synthesis must never read test-split images, but got {len(leaked)} (e.g. {leaked[0]}); use the train split only")


def diffusion_preprocessing(image_size: int, channels: int, augment: bool = True) -> Compose:
    """Load, bring to ``channels``, scale to [-1, 1], resize, match the colour statistics an item carries (pool items
    of colour-matched pre-training, :mod:`.colour`); horizontal flips when ``augment``."""
    steps: list = [
        LoadSliceOrImaged("image"),
        ConvertChannelsd("image", channels=channels),
        ScaleIntensityd("image", minv=-1.0, maxv=1.0),
        Resized("image", spatial_size=(image_size, image_size), mode="area"),
        MatchChannelStatsd("image"),
        EnsureTyped("image", dtype=torch.float32, track_meta=False),
    ]
    if augment:
        steps.append(RandFlipd("image", prob=0.5, spatial_axis=1))
    return Compose(steps)


class EMAWeights:
    """Checkpointable wrapper of diffusers' ``EMAModel`` that is stepped after each optimizer step; with warm-up
    (decay grows as 1 - (1 + step)^-3/4 up to ``decay``) so short runs average recent weights, not the init."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999) -> None:
        self.model = model
        self.ema = EMAModel(model.parameters(), decay=decay, use_ema_warmup=True, power=0.75)

    def step(self) -> None:
        self.ema.step(self.model.parameters())

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        self.ema.load_state_dict(state)

    def averaged_copy(self) -> UNet2DModel:
        """A copy of the model holding the averaged weights (for sampling and export)."""
        copy = UNet2DModel.from_config(self.model.config)
        copy.load_state_dict(self.model.state_dict())
        self.ema.copy_to(copy.parameters())
        return copy.eval()


class DiffusionStep:
    """``iteration_update`` for MONAI's ``SupervisedTrainer`` (network = UNet): noise a batch at random
    timesteps, predict what the scheduler's ``prediction_type`` names (``epsilon``: the noise; ``v_prediction``:
    the velocity; ``sample``: the clean image), MSE, clip gradients, step, update the EMA.

    ``snr_gamma`` > 0: Min-SNR-gamma loss weights (Hang et al., ICCV 2023), each image's loss weighted by
    ``min(SNR(t), gamma)`` divided by ``SNR(t)`` (epsilon), ``SNR(t) + 1`` (v) or 1 (sample), so the nearly clean
    timesteps stop dominating the gradient; 0: the plain mean squared error."""

    TARGETS = ("epsilon", "v_prediction", "sample")

    def __init__(self, scheduler: DDPMScheduler, ema: EMAWeights | None = None, max_grad_norm: float = 1.0, snr_gamma: float = 0.0) -> None:
        kind = scheduler.config.prediction_type
        if kind not in self.TARGETS:
            raise ValueError(f"prediction_type {kind!r} is not trainable here; choose one of {list(self.TARGETS)}")
        if snr_gamma < 0 or not math.isfinite(snr_gamma):
            raise ValueError(f"snr_gamma must be a finite number >= 0 (0: unweighted loss), got {snr_gamma}")
        self.scheduler = scheduler
        self.ema = ema
        self.max_grad_norm = max_grad_norm
        self.snr_gamma = snr_gamma

    def loss(self, prediction: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The (weighted) MSE of ``prediction`` (N, C, H, W) against the target at timesteps ``t`` (N,)."""
        kind = self.scheduler.config.prediction_type
        target = {"epsilon": noise, "sample": clean}.get(kind)
        target = self.scheduler.get_velocity(clean, noise, t) if target is None else target
        if not self.snr_gamma:
            return F.mse_loss(prediction, target)
        snr = compute_snr(self.scheduler, t).clamp(min=1e-12)
        weight = snr.clamp(max=self.snr_gamma) / {"epsilon": snr, "v_prediction": snr + 1}.get(kind, torch.ones_like(snr))
        return (F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()

    def __call__(self, engine: Engine, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        unet = engine.network
        unet.train()
        clean = torch.as_tensor(batch["image"]).to(engine.state.device)
        noise = torch.randn_like(clean)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device)
        noisy = self.scheduler.add_noise(clean, noise, t)
        engine.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(unet(noisy, t).sample, clean, noise, t)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), self.max_grad_norm)
        engine.optimizer.step()
        if self.ema is not None:
            self.ema.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach()}


@torch.no_grad()
def sample(unet: UNet2DModel, scheduler_config: Mapping[str, Any], num_images: int, steps: int = 50, batch_size: int = 8,
           seed: int = 0, eta: float = 0.0, device: str | torch.device | None = None) -> torch.Tensor:
    """``num_images`` samples (N, C, H, W) in [-1, 1] on the CPU, with DDIM on ``device`` (default: the GPU when there
    is one); the same seed gives the same images (the initial noise is drawn on the CPU)."""
    return torch.cat([x for _, x in ddim_batches(unet, scheduler_config, num_images, steps, batch_size, seed, device, eta=eta)])


@torch.no_grad()
def ddim_batches(unet: UNet2DModel, scheduler_config: Mapping[str, Any], num_images: int, steps: int = 50, batch_size: int = 8,
                 seed: int = 0, device: str | torch.device | None = None, skip_batches: int = 0,
                 eta: float = 0.0) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`sample` batch by batch: yields ``(batch index, (n, C, H, W) on the CPU)``. ``skip_batches``: the first
    batches' noise is drawn and dropped without running the model, so a resumed draw continues the same images.
    ``eta``: DDIM's share of fresh noise per step (0: deterministic DDIM; 1: ancestral sampling, as DDPM's); each
    batch draws its step noise from its own generator (seeded by ``seed`` and the batch index), so a resumed draw
    with ``eta > 0`` gives the same images too."""
    ddim = DDIMScheduler.from_config(dict(scheduler_config))
    ddim.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    size, channels = unet.config.sample_size, unet.config.in_channels
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unet = unet.to(device).eval()
    for index, start in enumerate(tqdm(range(0, num_images, batch_size), desc="DDIM sampling", unit="batch")):
        x = torch.randn(min(batch_size, num_images - start), channels, size, size, generator=generator).to(device)
        if index < skip_batches:
            continue
        step_noise = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
        for t in ddim.timesteps:
            x = ddim.step(unet(x, t).sample, t, x, eta=eta, generator=step_noise).prev_sample
        yield index, x.clamp(-1, 1).cpu()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W[, 3]) uint8 in the dataset's channel layout (grey or RGB)."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def write_pngs(images: torch.Tensor, folder: str | Path, prefix: str = "synthetic", start: int = 0) -> list[Path]:
    """Write images as ``<prefix>_<index>.png`` (grey 'L' or 'RGB'); returns the paths.

    MONAI's PIL reader returns (W, H) arrays, so tensors from the preprocessing are transposed back here."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(to_uint8(images.transpose(-1, -2))):
        path = folder / f"{prefix}_{start + i:05d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def save_unet(ema: EMAWeights, scheduler: DDPMScheduler, folder: str | Path) -> Path:
    """Save the EMA UNet and the noise scheduler with diffusers' ``save_pretrained`` (safetensors)."""
    folder = Path(folder)
    ema.averaged_copy().save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    return folder


def load_unet(folder: str | Path) -> tuple[UNet2DModel, dict]:
    """The exported UNet and its scheduler configuration, from :func:`save_unet`'s folder."""
    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"no diffusion model at {folder} (unet/config.json missing); train bundles/tskd_synthesis first")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return UNet2DModel.from_pretrained(folder / "unet").eval(), config
