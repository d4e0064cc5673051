"""Whether synthetic images look like the real ones, and whether they are copies of them: Frechet distance and k-NN
precision / recall on features of a fixed network (the foundation stand-in's image encoder, or a random ResNet-18),
a classifier two-sample test (a linear probe telling real from synthetic, cross-validated; 50% held-out accuracy =
indistinguishable) and a memorisation check (each synthetic image's nearest training image in feature space, and
their pixel SSIM).

Images are (N, C, S, S) tensors in [-1, 1] (the diffusion model's range); features are (N, D)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric, SSIMMetric
from scipy.stats import binomtest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TWO_SAMPLE_FOLDS = 5  # reports before 2026-11-29 (no "two_sample_folds" key) held out one random half instead


def standin_record(checkpoint: str | Path) -> dict[str, Any]:
    """The ``standin.json`` of a foundation stand-in checkpoint; a clear error when the file or its record is missing
    (checked before any training that ends with a report on the stand-in's features)."""
    from ..foundation.model import read_standin_record

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"foundation stand-in checkpoint {checkpoint} not found; pass the standin.pth written by "
                                "`tskd foundation` (e.g. runs/foundation/standin/standin.pth) or leave it out")
    record = read_standin_record(checkpoint)
    if record is None:
        raise FileNotFoundError(f"{checkpoint}: no standin.json beside it; pass a checkpoint written by `tskd foundation`")
    return record


class StandinFeatures(torch.nn.Module):
    """The foundation stand-in's image encoder (``standin.pth``), mean-pooled: (N, C, S, S) in [-1, 1] -> (N, 256)."""

    def __init__(self, checkpoint: str | Path) -> None:
        super().__init__()
        from ..foundation.model import build_promptable_sam

        record = standin_record(checkpoint)
        sam = build_promptable_sam(record["sam_variant"], record["image_size"])
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self.encoder, self.size = sam.image_encoder.eval(), record["image_size"]
        self.sha256 = record.get("sha256")  # which stand-in: one retrained elsewhere is a different feature space
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1) / 2
        x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.encoder((x - self.mean) / self.std).mean(dim=(2, 3))


def frechet_distance(real: torch.Tensor, synthetic: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets (MONAI's ``FIDMetric``)."""
    return float(FIDMetric()(synthetic.double(), real.double()))


def frechet_floor(real: torch.Tensor, seed: int = 0) -> float:
    """Frechet distance between two random halves of the real features (N, D): what a generator that drew real
    images would score at about this sample size. A synthetic set's distance reads against it, not against 0
    (with tens of images per side the Gaussian fits alone keep it well above 0)."""
    if len(real) < 4:
        raise ValueError(f"{len(real)} real images; the Frechet floor needs at least 4 (two halves of 2)")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    half = len(real) // 2
    return frechet_distance(real[order[:half]], real[order[half:2 * half]])


def knn_precision_recall(real: torch.Tensor, synthetic: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019): precision = share of synthetic features inside
    the union of the real features' k-NN balls (realism); recall = share of real features inside the synthetic
    features' balls (coverage)."""

    def inside(points: torch.Tensor, manifold: torch.Tensor) -> float:
        radii = torch.cdist(manifold, manifold).kthvalue(k + 1, dim=1).values  # k-th neighbour, itself excluded
        return float((torch.cdist(points, manifold) <= radii[None]).any(dim=1).float().mean())

    return {"precision": inside(synthetic, real), "recall": inside(real, synthetic), "k": k}


def two_sample_accuracy(real: torch.Tensor, synthetic: torch.Tensor, seed: int = 0, steps: int = 300, folds: int = TWO_SAMPLE_FOLDS) -> float:
    """Classifier two-sample test: equal numbers of real and synthetic features; ``folds``-fold cross-validation (each
    class dealt round-robin into the folds after a seeded shuffle), a logistic-regression probe trained on the other
    folds (standardised with their statistics) predicts each fold; the accuracy over all ``2 * n`` out-of-fold
    predictions (0.5: indistinguishable). Every image is held out once, so no single lucky split decides it."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(real), len(synthetic))
    if n < 2:
        raise ValueError(f"the two-sample test needs at least 2 real and 2 synthetic images, got {len(real)} and {len(synthetic)}")
    folds = min(folds, n)  # every fold holds both classes
    x = torch.cat([real[torch.randperm(len(real), generator=generator)[:n]], synthetic[torch.randperm(len(synthetic), generator=generator)[:n]]]).float()
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    fold = torch.cat([torch.randperm(n, generator=generator) % folds, torch.randperm(n, generator=generator) % folds])
    correct = torch.zeros(2 * n, dtype=torch.bool)
    for k in range(folds):
        train, test = fold != k, fold == k
        correct[test] = (_probe(x[train], y[train], steps)(x[test]) > 0).float() == y[test]
    return float(correct.float().mean())


def _probe(x: torch.Tensor, y: torch.Tensor, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A logistic-regression probe (L2 1e-2, LBFGS) on standardised ``x`` (N, D); returns features -> logits (N,)."""
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    probe = torch.nn.Linear(x.shape[1], 1)
    torch.nn.init.zeros_(probe.weight), torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    standard = (x - mean) / std

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(probe(standard)[:, 0], y) + 1e-2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)

    @torch.no_grad()
    def logits(features: torch.Tensor) -> torch.Tensor:
        return probe((features - mean) / std)[:, 0]

    return logits


def two_sample_interval(accuracy: float, held_out: int, confidence: float = 0.95) -> list[float]:
    """Wilson interval of a two-sample test's held-out accuracy over ``held_out`` predictions (with 64 a single
    accuracy is uncertain by about +-0.1, so a goal such as <= 0.80 is met only where the interval's top is below it).
    For cross-validated predictions it is approximate: the folds' probes share training images, so the predictions
    are not independent and the interval is somewhat narrow."""
    interval = binomtest(round(accuracy * held_out), held_out).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(interval.low), float(interval.high)]


def memorisation(synthetic_images: torch.Tensor, train_images: torch.Tensor, synthetic: torch.Tensor, train: torch.Tensor,
                 ssim_threshold: float = 0.8) -> dict[str, Any]:
    """For each synthetic image, its nearest training image by cosine similarity of features, and the pixel SSIM of
    the two; ``share_copied`` = the share whose SSIM exceeds ``ssim_threshold`` (near-copies of a training image)."""
    similarity = F.normalize(synthetic.float(), dim=1) @ F.normalize(train.float(), dim=1).T
    cosine, nearest = similarity.max(dim=1)
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0)(synthetic_images.float(), train_images[nearest].float()).flatten()
    copied = ssim > ssim_threshold
    return {"nearest_train_index": nearest.tolist(), "cosine": cosine.tolist(), "ssim": ssim.tolist(),
            "ssim_threshold": ssim_threshold, "copied": copied.nonzero().flatten().tolist(), "share_copied": float(copied.float().mean())}
