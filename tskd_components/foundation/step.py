"""One promptable, class-agnostic training iteration of the foundation stand-in (SAM's recipe, scaled down):
per image a random object (one class present in its mask), prompted by a jittered box (single-mask output) or a
positive point (three outputs, the best one trained), focal + Dice loss on the masks and MSE on predicted IoU."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from ignite.engine import Engine
from monai.losses import DiceLoss, FocalLoss

from .model import prompt_masks
from .prompts import jitter_box, mask_box, random_point


class PromptableStep:
    """``iteration_update`` for MONAI's ``SupervisedTrainer`` whose network is a segment-anything ``Sam``.

    Args:
        box_prob: share of objects prompted by a box (the rest by one positive point).
        box_jitter: box sides move by up to this fraction of the box size.
        focal_weight, dice_weight, iou_weight: loss weights (SAM: 20 : 1 : 1).
        seed: seeds the object and prompt draws.
    """

    def __init__(self, box_prob: float = 0.5, box_jitter: float = 0.1, focal_weight: float = 20.0, dice_weight: float = 1.0,
                 iou_weight: float = 1.0, seed: int = 0) -> None:
        self.box_prob, self.box_jitter = box_prob, box_jitter
        self.weights = (focal_weight, dice_weight, iou_weight)
        self.focal = FocalLoss(use_softmax=False, reduction="none")
        self.dice = DiceLoss(sigmoid=True, reduction="none")
        self.generator = torch.Generator().manual_seed(seed)

    def object_loss(self, sam: torch.nn.Module, embedding: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one object: ``target`` (S, S) boolean mask, ``embedding`` (1, C, h, w) of its image."""
        use_box = torch.rand(1, generator=self.generator).item() < self.box_prob
        if use_box:
            prompt = {"box": jitter_box(mask_box(target), target.shape[-1], self.box_jitter, self.generator).to(embedding.device)}
        else:
            prompt = {"point": random_point(target, self.generator).to(embedding.device)}
        logits, iou_pred = prompt_masks(sam, embedding, **prompt)  # (K, S, S), (K,)
        truth = target.float()[None].expand_as(logits)
        focal = self.focal(logits[None], truth[None]).mean(dim=(2, 3))[0]  # (K,)
        dice = self.dice(logits[None], truth[None]).flatten()  # (K,)
        per_mask = self.weights[0] * focal + self.weights[1] * dice
        best = int(per_mask.argmin())  # the ambiguity-aware outputs: only the best one is trained
        with torch.no_grad():
            pred = logits[best] > 0
            iou_true = (pred & target).sum() / (pred | target).sum().clamp(min=1)
        loss = per_mask[best] + self.weights[2] * (iou_pred[best] - iou_true) ** 2
        return loss, {"focal": float(focal[best].detach()), "dice": float(dice[best].detach()), "iou": float(iou_true), "box": float(use_box)}

    def __call__(self, engine: Engine, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        images = torch.as_tensor(batch["image"]).to(engine.state.device)
        labels = torch.as_tensor(batch["label"])[:, 0].long()
        sam = engine.network
        sam.train()
        engine.optimizer.zero_grad(set_to_none=True)
        embeddings = sam.image_encoder(images)
        losses, parts = [], []
        for i in range(len(images)):
            classes = [c for c in labels[i].unique().tolist() if c > 0]
            if not classes:
                continue
            c = classes[torch.randint(len(classes), (1,), generator=self.generator).item()]
            loss, part = self.object_loss(sam, embeddings[i : i + 1], (labels[i] == c).to(images.device))
            losses.append(loss)
            parts.append(part)
        if not losses:  # a batch of background-only images: nothing to prompt
            return {"loss": torch.zeros((), device=images.device)}
        loss = torch.stack(losses).mean()
        loss.backward()
        engine.optimizer.step()
        means = {k: torch.tensor(sum(p[k] for p in parts) / len(parts)) for k in parts[0]}
        return {"loss": loss.detach(), **means}
