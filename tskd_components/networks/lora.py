"""The TS-KD teacher: a prompt-free SAM adapted with LoRA (peft) on its encoder attention, plus a trained mask
decoder; saving and loading of the adapted part or of the merged model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from ..utils.weights import read_state_dict, save_safetensors
from .sam import PromptFreeSAM, build_prompt_free_sam

logger = logging.getLogger(__name__)

LORA_FILE = "teacher_lora.safetensors"
MERGED_FILE = "teacher_merged.safetensors"


class LoRASAMSegmenter(nn.Module):
    """Prompt-free SAM with LoRA on the image encoder's attention and an adapted mask decoder.

    Args:
        sam: the prompt-free SAM to adapt (its weights stay frozen except for LoRA and the decoder).
        lora_rank, lora_alpha, lora_dropout: LoRA hyper-parameters (peft).
        lora_targets: attention sub-modules of each encoder block that get LoRA (``qkv``, ``proj``).
        decoder_mode: ``"full"`` trains the whole mask decoder; ``"lora"`` puts LoRA on the decoder transformer's
            attention projections and trains only those, the mask tokens and the hypernetwork MLPs.
        train_encoder: also train the encoder's own weights. Only for SAM-architecture teachers without SAM
            pre-training (``random_init``), where there is no pre-trained encoder to preserve.
    """

    def __init__(
        self,
        sam: PromptFreeSAM,
        lora_rank: int = 4,
        lora_alpha: float = 4.0,
        lora_dropout: float = 0.0,
        lora_targets: Sequence[str] = ("qkv",),
        decoder_mode: str = "full",
        train_encoder: bool = False,
    ) -> None:
        super().__init__()
        if decoder_mode not in ("full", "lora"):
            raise ValueError(f"decoder_mode must be 'full' or 'lora', got {decoder_mode!r}")
        self.sam = sam
        self.base_is_random = False  # set by build_lora_sam for random_init teachers
        self.lora_config = {"rank": lora_rank, "alpha": lora_alpha, "dropout": lora_dropout, "targets": list(lora_targets),
                            "decoder_mode": decoder_mode, "train_encoder": train_encoder}
        targets = "|".join(lora_targets)
        pattern = rf"image_encoder\.blocks\.\d+\.attn\.({targets})"
        if decoder_mode == "lora":
            pattern = rf"({pattern})|(mask_decoder\.transformer\..*(q_proj|k_proj|v_proj|out_proj))"
        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=pattern, bias="none")
        inject_adapter_in_model(config, self.sam)
        for name, param in self.sam.named_parameters():
            param.requires_grad = "lora_" in name or (train_encoder and name.startswith("image_encoder.")) or (
                name.startswith("mask_decoder.")
                and (decoder_mode == "full" or name.startswith(("mask_decoder.mask_tokens", "mask_decoder.iou_token", "mask_decoder.output_hypernetworks_mlps", "mask_decoder.output_upscaling")))
            )

    @property
    def num_classes(self) -> int:
        return self.sam.num_classes

    @property
    def lora_modules(self) -> list[str]:
        return [name for name, module in self.sam.named_modules() if isinstance(module, LoraLayer)]

    def parameter_counts(self) -> dict[str, int | float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total, "fraction": trainable / total}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapted part: LoRA matrices and the trained decoder (and encoder, with ``train_encoder``) parameters."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold to rebuild this teacher: the adapted part on top of a SAM checkpoint, or
        every tensor when the base SAM is randomly initialised (no file could restore it)."""
        return self.state_dict() if self.base_is_random else self.trainable_state_dict()

    def forward_with_hidden(self, x: torch.Tensor, hidden_indices: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.sam.forward_with_hidden(x, hidden_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sam(x)


def merged_sam(model: LoRASAMSegmenter) -> PromptFreeSAM:
    """A plain ``PromptFreeSAM`` with the LoRA updates merged into its weights (for export)."""
    plain = PromptFreeSAM(model.sam.spec, model.num_classes, model.sam.image_size)
    state = {}
    for name, value in model.sam.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = value.clone()
    for name, module in model.sam.named_modules():
        if isinstance(module, LoraLayer):
            state[f"{name}.weight"] = state[f"{name}.weight"] + module.get_delta_weight("default")
    plain.load_state_dict(state)
    return plain


def save_teacher(model: LoRASAMSegmenter, path: str | Path, merged: bool = False) -> Path:
    """Write the adapted part (default) or the merged full model as safetensors, with the build settings."""
    state = merged_sam(model).state_dict() if merged else model.checkpoint_state_dict()
    meta = {"format": "merged" if merged else "lora", "num_classes": str(model.num_classes), "image_size": str(model.sam.image_size)}
    meta |= {k: str(v) for k, v in model.lora_config.items()}
    return save_safetensors(state, path, meta)


def load_teacher_weights(model: LoRASAMSegmenter, path: str | Path) -> LoRASAMSegmenter:
    """Load a file written by :func:`save_teacher` (adapted part, or merged full model) into ``model``."""
    state = read_state_dict(path)
    if any("lora_" in k for k in state):
        missing_trainable = sorted(set(model.trainable_state_dict()) - set(state))
        if missing_trainable:
            raise ValueError(f"{path} lacks {len(missing_trainable)} adapted tensors (e.g. {missing_trainable[:3]}); it was saved for another LoRA configuration")
        model.load_state_dict(state, strict=False)
        return model
    # merged full model: weights of LoRA-wrapped layers go into their base layers, and the LoRA update is zeroed
    own = model.state_dict()
    wrapped = set(model.lora_modules)
    mapped = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        mapped[f"sam.{module}.base_layer.{leaf}" if module in wrapped else f"sam.{key}"] = value
    unknown = sorted(k for k in mapped if k not in own)
    if unknown:
        raise ValueError(f"{path} holds tensors that do not fit this teacher: {unknown[:5]}")
    model.load_state_dict(mapped, strict=False)
    for module in model.sam.modules():
        if isinstance(module, LoraLayer):
            nn.init.zeros_(module.lora_B["default"].weight)
    return model


def build_lora_sam(
    variant: str = "vit_b",
    num_classes: int = 2,
    image_size: int = 256,
    sam_checkpoint: str | Path | None = None,
    random_init: bool = False,
    lora_rank: int = 4,
    lora_alpha: float = 4.0,
    lora_dropout: float = 0.0,
    lora_targets: Sequence[str] = ("qkv",),
    decoder_mode: str = "full",
    train_encoder: bool = False,
    weights: str | Path | None = None,
) -> LoRASAMSegmenter:
    """The teacher as the bundles build it: SAM (checkpoint or random init) + LoRA, optionally with trained weights."""
    sam = build_prompt_free_sam(variant, num_classes, image_size, sam_checkpoint, random_init)
    model = LoRASAMSegmenter(sam, lora_rank, lora_alpha, lora_dropout, lora_targets, decoder_mode, train_encoder)
    model.base_is_random = random_init
    if weights:
        load_teacher_weights(model, weights)
    counts = model.parameter_counts()
    logger.info(f"LoRA-SAM {variant} @ {image_size}px: {counts['trainable']:,} trainable of {counts['total']:,} parameters ({100 * counts['fraction']:.2f} %)")
    return model


class AdaptedWeights:
    """Checkpoint view of a teacher holding only its adapted tensors (LoRA + decoder), so checkpoints of a
    90 M-parameter SAM stay a few MB (random-init teachers: all tensors). Use it in place of the network in a
    checkpoint ``save_dict``."""

    def __init__(self, model: LoRASAMSegmenter) -> None:
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.checkpoint_state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        missing = sorted(set(self.model.trainable_state_dict()) - set(state))
        if strict and missing:
            raise ValueError(f"checkpoint lacks adapted tensors {missing[:3]}; it was saved for another LoRA configuration")
        self.model.load_state_dict(state, strict=False)


def export_teacher(model: LoRASAMSegmenter, ckpt_dir: str | Path, checkpoint_name: str = "model.pt") -> dict[str, Path]:
    """Write ``LORA_FILE`` (adapted part) and ``MERGED_FILE`` (full merged model)
    from the best checkpoint in ``ckpt_dir`` (or the current weights when there is none)."""
    best = Path(ckpt_dir) / checkpoint_name
    if best.is_file():
        AdaptedWeights(model).load_state_dict(read_state_dict(best))
    return {
        "lora": save_teacher(model, Path(ckpt_dir) / LORA_FILE),
        "merged": save_teacher(model, Path(ckpt_dir) / MERGED_FILE, merged=True),
    }
