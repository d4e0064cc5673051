"""Quality report of synthetic images: a grid beside real images, intensity histograms and a Frechet distance
between feature statistics (``monai.metrics.FIDMetric``) of a fixed network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from ..utils.io import write_json
from ..utils.weights import read_state_dict
from .colour import channel_statistics, match_target_statistics, samples_description
from .diffusion import to_uint8
from .quality import (
    TWO_SAMPLE_FOLDS,
    StandinFeatures,
    frechet_distance,
    frechet_floor,
    knn_precision_recall,
    memorisation,
    two_sample_accuracy,
    two_sample_interval,
)


def feature_network(weights: str | Path | None = None, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """ResNet-18 up to global pooling (512 features) and a description. With ``weights`` (a torchvision ResNet-18
    state dict, e.g. ImageNet) those are loaded; otherwise a fixed-seed random initialisation is used: its
    distances compare runs with each other, not with published FIDs (which use ImageNet Inception features)."""
    torch.manual_seed(seed)
    net = resnet18(weights=None)
    if weights:
        net.load_state_dict(read_state_dict(weights))
        name = f"torchvision ResNet-18 with weights {weights}"
    else:
        name = f"torchvision ResNet-18, random initialisation with seed {seed} (no pretrained weights available)"
    net.fc = torch.nn.Identity()
    return net.eval(), name


@torch.no_grad()
def features(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Features of images in [-1, 1] (grey repeated to 3 channels, resized to 128 px)."""
    out = []
    for batch in images.split(batch_size):
        x = batch.repeat(1, 3, 1, 1) if batch.shape[1] == 1 else batch
        out.append(net(F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)))
    return torch.cat(out)


def quality_report(real: torch.Tensor, synthetic: torch.Tensor, output_dir: str | Path, feature_weights: str | Path | None = None,
                   grid_count: int = 8, standin_checkpoint: str | Path | None = None, samples: str = "") -> dict:
    """Write ``samples_grid.png``, ``histograms.png`` and ``quality.json``: Frechet distance, k-NN precision /
    recall and the two-sample test's accuracy on ResNet-18 features (and on the stand-in encoder's, given its
    checkpoint), and the memorisation check of the synthetic images against ``real`` (the training images).
    ``samples``: how the synthetic images were made, recorded in the report (:func:`~tskd_components.synthesis.colour.samples_description`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if min(len(real), len(synthetic)) < 4:  # k-NN balls (k = 3) and the Frechet floor's two halves need 4
        raise ValueError(f"a quality report needs at least 4 real and 4 synthetic images, got {len(real)} real and {len(synthetic)} "
                         "synthetic; sample more images (report_samples) or use a dataset with more training images")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = min(grid_count, len(real), len(synthetic))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for row, (name, batch) in enumerate((("real", real), ("synthetic", synthetic))):
        for i, img in enumerate(to_uint8(batch[:n].transpose(-1, -2))):
            axes[row, i].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            axes[row, i].axis("off")
        axes[row, 0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples_grid.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 3))
    bins = np.linspace(-1, 1, 65)
    ax.hist(real.flatten().numpy(), bins=bins, density=True, alpha=0.6, label=f"real ({len(real)})")
    ax.hist(synthetic.flatten().numpy(), bins=bins, density=True, alpha=0.6, label=f"synthetic ({len(synthetic)})")
    ax.set_xlabel("intensity (scaled to [-1, 1])")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "histograms.png", dpi=110)
    plt.close(fig)

    net, description = feature_network(feature_weights)
    real_f, synth_f = features(net, real), features(net, synthetic)
    report = {**({"samples": samples} if samples else {}), "feature_network": description, "num_real": len(real), "num_synthetic": len(synthetic),
              "grid": "samples_grid.png", "histograms": "histograms.png", "fid": frechet_distance(real_f, synth_f),
              "fid_floor": frechet_floor(real_f), **knn_precision_recall(real_f, synth_f), "two_sample_accuracy": two_sample_accuracy(real_f, synth_f), "two_sample_folds": TWO_SAMPLE_FOLDS}
    if standin_checkpoint:  # the features that know medical images: the foundation stand-in's encoder
        encoder = StandinFeatures(standin_checkpoint)
        real_f, synth_f = encoder(real), encoder(synthetic)
        report["standin"] = {"checkpoint": str(standin_checkpoint), "sha256": encoder.sha256, "fid": frechet_distance(real_f, synth_f),
                             "fid_floor": frechet_floor(real_f), **knn_precision_recall(real_f, synth_f),
                             "two_sample_accuracy": two_sample_accuracy(real_f, synth_f),
                             "two_sample_held_out": 2 * min(len(real), len(synthetic))}  # cross-validated: every image once
        report["standin"]["two_sample_ci95"] = two_sample_interval(report["standin"]["two_sample_accuracy"], report["standin"]["two_sample_held_out"])
    copies = memorisation(synthetic, real, synth_f, real_f)  # real = the training images the model learned from
    report["memorisation"] = {k: copies[k] for k in ("ssim_threshold", "share_copied", "copied")} | {"max_ssim": max(copies["ssim"])}
    write_json(out / "quality.json", report)
    return report


def report_for_model(dataset_dir: str | Path, model_dir: str | Path, output_dir: str | Path, num_samples: int = 32,
                     steps: int = 50, seed: int = 0, feature_weights: str | Path | None = None,
                     standin_checkpoint: str | Path | None = None, grid_count: int = 8, match_statistics: bool = False,
                     samples_dir: str | Path = "", eta: float = 0.0) -> dict:
    """Sample ``num_samples`` images from the model in ``model_dir`` and report on them against the real
    training images of ``dataset_dir`` at the model's resolution (``grid_count`` of each in the grid).
    ``samples_dir``: report on the first ``num_samples`` of that drawn-samples folder (:mod:`.samples`) instead of
    sampling the model (``steps``, ``eta`` and ``seed`` then come from its manifest). ``eta``: DDIM's step noise
    (:func:`~tskd_components.synthesis.diffusion.sample`); the report records the sampler.
    ``match_statistics``: the samples first take the channel statistics of the training images
    (:func:`~tskd_components.synthesis.colour.match_target_statistics`, drawn with ``seed``), as a transfer set
    built with it would."""
    from monai.data import Dataset

    from .diffusion import diffusion_preprocessing, load_unet, sample, synthesis_datalist
    from .samples import read_samples, read_samples_manifest

    if samples_dir:
        drawn = read_samples_manifest(samples_dir, num_samples)
        size, channels, seed, steps, eta = drawn["image_size"], drawn["channels"], drawn["seed"], drawn["ddim_steps"], drawn.get("eta", 0.0)
        synthetic = read_samples(samples_dir, num_samples)
    else:
        unet, scheduler_config = load_unet(model_dir)
        size, channels = unet.config.sample_size, unet.config.in_channels
        synthetic = sample(unet, scheduler_config, num_samples, steps, seed=seed, eta=eta)
    pre = diffusion_preprocessing(size, channels, augment=False)
    real = torch.stack([item["image"] for item in Dataset(synthesis_datalist(dataset_dir), pre)])
    if match_statistics:  # the training images just loaded are the references: same preprocessing, no second read
        synthetic = match_target_statistics(synthetic, dataset_dir, seed, statistics=channel_statistics(real))
    report = quality_report(real, synthetic, output_dir, feature_weights, grid_count=grid_count, standin_checkpoint=standin_checkpoint,
                            samples=samples_description(match_statistics))
    report = {**report, "sampler": {"ddim_steps": steps, "eta": eta, "seed": seed},
              **({"samples_dir": str(samples_dir), "model_sha256": drawn["model_sha256"]} if samples_dir else {})}
    write_json(Path(output_dir) / "quality.json", report)
    print(json.dumps(report, indent=1))
    return report
