"""Distillation pre-training with Ignite: teacher targets from the cache (or an online teacher), one student
forward per batch, the KD loss and its parts as the engine output."""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import torch
from ignite.engine import Engine
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, RandAdjustContrastd, RandFlipd, RandGaussianNoised, RandScaleIntensityd
from torch import nn

from .cache import TeacherCache

HIDDEN_KEY = "teacher_hidden"
LOGITS_KEY = "teacher_logits"


class TeacherTargetsd(MapTransform):
    """Add an item's cached teacher targets: ``teacher_hidden`` as one (layers x C, h, w) map (so spatial
    transforms treat it like an image) and ``teacher_logits`` (K, H', W') when the cache holds logits. Targets keep
    the cache's storage dtype (float16 by default), so a ``CacheDataset`` of them takes half the memory;
    :class:`DistillationStep` computes in float32."""

    def __init__(self, cache: TeacherCache, id_key: str = "id") -> None:
        super().__init__(keys=[id_key])
        self.cache = cache
        self.id_key = id_key
        self.dtype = getattr(torch, cache.meta["dtype"])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        target = self.cache[d[self.id_key]]
        d[HIDDEN_KEY] = torch.cat(target["hidden"], dim=0).to(self.dtype)
        if "logits" in target:
            d[LOGITS_KEY] = target["logits"].to(self.dtype)
        return d


def distillation_augmentation(cached: bool, prob: float = 0.5) -> Compose:
    """Flips applied identically to the image and the cached targets (which stay valid for a flipped image),
    plus photometric changes to the student's image only, so the student learns the teacher's output on the
    clean image from a perturbed view."""
    spatial_keys: KeysCollection = ["image", HIDDEN_KEY, LOGITS_KEY] if cached else ["image"]
    return Compose(
        [
            RandFlipd(spatial_keys, prob=prob, spatial_axis=0, allow_missing_keys=True),
            RandFlipd(spatial_keys, prob=prob, spatial_axis=1, allow_missing_keys=True),
            RandScaleIntensityd("image", factors=0.1, prob=prob),
            RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=prob),
            RandGaussianNoised("image", std=0.05, prob=prob / 2),
        ]
    )


class DistillationStep:
    """``iteration_update`` for MONAI's ``SupervisedTrainer``: the trainer's network is the student and its
    loss function a KD loss (``TaskSpecificKDLoss`` / ``TaskAgnosticKDLoss``).

    With cached targets in the batch the teacher is never run; otherwise ``teacher`` (online mode) computes
    ``teacher_layers`` hidden states and logits under ``no_grad``. The student and the loss are called through
    their ``forward`` so that ``DistributedDataParallel`` wrappers (multi_gpu_train.json) synchronise gradients.
    """

    def __init__(self, teacher: nn.Module | None = None, teacher_layers: Sequence[int] | None = None) -> None:
        self.teacher = teacher.eval() if teacher is not None else None
        self.teacher_layers = list(teacher_layers) if teacher_layers is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    def teacher_targets(self, batch: Mapping[str, Any], images: torch.Tensor, num_layers: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if HIDDEN_KEY in batch:
            hidden = torch.as_tensor(batch[HIDDEN_KEY]).to(images.device).float()
            logits = batch.get(LOGITS_KEY)
            return list(hidden.chunk(num_layers, dim=1)), None if logits is None else torch.as_tensor(logits).to(images.device).float()
        if self.teacher is None:
            raise ValueError("the batch holds no cached teacher targets and no online teacher was given; set cache_dir or teacher_weights")
        self.teacher.to(images.device)
        with torch.no_grad():
            logits, hidden = self.teacher.forward_with_hidden(images, self.teacher_layers)
        return hidden, logits

    def __call__(self, engine: Engine, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        images = torch.as_tensor(batch["image"]).to(engine.state.device)
        student = engine.network
        student.train()
        num_layers = len(getattr(student, "module", student).hidden_indices)
        hidden_t, logits_t = self.teacher_targets(batch, images, num_layers)
        engine.optimizer.zero_grad(set_to_none=True)
        logits_s, hidden_s = student(images, return_hidden=True)
        loss, parts = engine.loss_function(hidden_s, hidden_t, logits_s, logits_t)
        loss.backward()
        engine.optimizer.step()
        return {"loss": loss.detach(), **parts}
