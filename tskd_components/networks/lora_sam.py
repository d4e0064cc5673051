"""The TS-KD teacher: Segment Anything, prompt-free and multi-class, adapted with LoRA (peft).

SAM is assembled from ``segment_anything.modeling`` classes with the registry's ``vit_b`` / ``vit_l`` /
``vit_h`` shapes, at a configurable input size (the registry fixes 1024 px and 3+1 mask tokens). An official
checkpoint is adapted on load: the absolute position embedding and the global-attention relative position
tables are interpolated to the new token grid, and the mask tokens / hypernetwork MLPs are repeated to give
one mask token per class. Without prompts, every mask token decodes one class's logit map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from ..utils.weights import file_digest, read_state_dict, save_safetensors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamSpec:
    """Shape of a SAM image encoder and mask decoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8


SAM_VARIANTS = {
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    # smaller configurations of the same classes, random init only: a CPU-trainable teacher and a test size
    "small": SamSpec(256, 6, 8, (1, 3, 5), window_size=8, prompt_dim=128, decoder_depth=2, decoder_mlp_dim=512, decoder_heads=4),
    "tiny": SamSpec(64, 4, 2, (1, 3), window_size=4, prompt_dim=32, decoder_depth=1, decoder_mlp_dim=64, decoder_heads=2),
}
CHECKPOINT_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


def evenly_spaced_teacher_blocks(depth: int, count: int = 4) -> tuple[int, ...]:
    """0-based indices of ``count`` evenly spaced encoder blocks ending with the last (vit_b: 2, 5, 8, 11)."""
    return tuple(depth * (i + 1) // count - 1 for i in range(count))


class PromptFreeSAM(nn.Module):
    """SAM's image encoder + mask decoder without prompts: one logit map per class at the input resolution.

    Inputs are ImageNet-normalised RGB images (the same as SAM's own pixel normalisation of 0-255 inputs).
    """

    def __init__(self, spec: SamSpec, num_classes: int, image_size: int = 1024, patch_size: int = 16) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of {patch_size}")
        grid = image_size // patch_size
        self.spec = spec
        self.num_classes = num_classes
        self.image_size = image_size
        self.image_encoder = ImageEncoderViT(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=4,
            out_chans=spec.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=spec.window_size,
            global_attn_indexes=spec.global_attn_indexes,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=spec.prompt_dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=16
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=num_classes - 1,
            transformer=TwoWayTransformer(depth=spec.decoder_depth, embedding_dim=spec.prompt_dim, mlp_dim=spec.decoder_mlp_dim, num_heads=spec.decoder_heads),
            transformer_dim=spec.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_encoder.pos_embed.shape[1:3]

    def encode(self, x: torch.Tensor, hidden_indices: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image embedding (B, prompt_dim, h, w) and the outputs of ``hidden_indices`` blocks as (B, C, h, w)."""
        enc = self.image_encoder
        x = enc.patch_embed(x) + enc.pos_embed
        hidden = []
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i in hidden_indices:
                hidden.append(x.permute(0, 3, 1, 2))
        return enc.neck(x.permute(0, 3, 1, 2)), hidden

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        """All mask tokens decoded without prompts (batched over images), upsampled to the input size."""
        dec = self.mask_decoder
        b, c, h, w = embedding.shape
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(0).expand(b, -1, -1)
        src = embedding + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        pos = self.prompt_encoder.get_dense_pe().expand(b, -1, -1, -1)
        hs, src = dec.transformer(src, pos, tokens)
        mask_tokens = hs[:, 1 : 1 + dec.num_mask_tokens]
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
        return F.interpolate(masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def forward_with_hidden(self, x: torch.Tensor, hidden_indices: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        embedding, hidden = self.encode(x, hidden_indices)
        return self.decode(embedding), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


def adapt_sam_state_dict(state: dict[str, torch.Tensor], model: PromptFreeSAM) -> dict[str, torch.Tensor]:
    """Fit an official SAM state dict to ``model``: resize position tables, one mask token per class."""
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        if key not in own:
            continue
        target = own[key].shape
        if value.shape == target:
            out[key] = value
        elif key == "image_encoder.pos_embed":  # (1, H, W, C)
            out[key] = F.interpolate(value.permute(0, 3, 1, 2), size=target[1:3], mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        elif key.endswith(("rel_pos_h", "rel_pos_w")):  # (2 * size - 1, head_dim)
            out[key] = F.interpolate(value.T[None], size=target[0], mode="linear", align_corners=False)[0].T
        elif key == "mask_decoder.mask_tokens.weight":
            out[key] = value[torch.arange(target[0]) % value.shape[0]]
    n_old = state["mask_decoder.mask_tokens.weight"].shape[0] if "mask_decoder.mask_tokens.weight" in state else 0
    for key in own:  # hypernetwork MLP i of class i starts from pre-trained MLP (i mod n_old)
        if key.startswith("mask_decoder.output_hypernetworks_mlps.") and key not in out and n_old:
            i = int(key.split(".")[2])
            source = key.replace(f"mlps.{i}.", f"mlps.{i % n_old}.", 1)
            if source in state:
                out[key] = state[source]
    return out


def build_prompt_free_sam(
    variant: str = "vit_b",
    num_classes: int = 2,
    image_size: int = 1024,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
) -> PromptFreeSAM:
    """SAM ``variant`` at ``image_size`` with ``num_classes`` mask tokens, from an official checkpoint.

    ``random_init=True`` (tests, small-scale experiments without SAM weights) skips the checkpoint and says so.
    """
    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant '{variant}'; choose one of {sorted(SAM_VARIANTS)}")
    model = PromptFreeSAM(SAM_VARIANTS[variant], num_classes, image_size)
    if random_init:
        logger.warning(f"SAM {variant} is randomly initialised (random_init=True): no Segment Anything pre-training")
        return model
    expected = CHECKPOINT_FILES.get(variant, "<none: the 'tiny' variant exists only with random_init=True>")
    if not checkpoint or not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {checkpoint or '(not set)'} not found; download the official {variant} weights ({expected}) "
            "from https://github.com/facebookresearch/segment-anything#model-checkpoints and pass its path as sam_checkpoint, "
            "or set random_init true for an untrained SAM-architecture teacher"
        )
    state = read_state_dict(checkpoint)
    adapted = adapt_sam_state_dict(state, model)
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    skipped = sorted(set(state) - set(adapted))
    logger.info(f"loaded {checkpoint}: {len(adapted)} tensors; not loaded {len(skipped)} {skipped[:5]}; left at init {len(missing)} {missing[:5]}")
    return model


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
    """Write ``teacher_lora.safetensors`` (adapted part) and ``teacher_merged.safetensors`` (full merged model)
    from the best checkpoint in ``ckpt_dir`` (or the current weights when there is none)."""
    best = Path(ckpt_dir) / checkpoint_name
    if best.is_file():
        AdaptedWeights(model).load_state_dict(read_state_dict(best))
    return {
        "lora": save_teacher(model, Path(ckpt_dir) / "teacher_lora.safetensors"),
        "merged": save_teacher(model, Path(ckpt_dir) / "teacher_merged.safetensors", merged=True),
    }


def teacher_id(mode: str, variant: str, teacher_weights: str | Path | None = None, sam_checkpoint: str | Path | None = None,
               random_init: bool = False, seed: int = 0) -> str | None:
    """The id that ties a cache to its teacher: SHA-256 of the merged fine-tuned teacher (``fine_tuned``), of the
    SAM checkpoint (``frozen``), or the variant and seed of a random initialisation. ``None`` when the file is absent."""
    if mode == "fine_tuned":
        return f"sha256:{file_digest(teacher_weights)}" if teacher_weights and Path(teacher_weights).is_file() else None
    if random_init:
        return f"random-init:{variant}:seed{seed}"
    return f"sha256:{file_digest(sam_checkpoint)}" if sam_checkpoint and Path(sam_checkpoint).is_file() else None


def cache_teacher(
    mode: str,
    variant: str,
    num_classes: int,
    image_size: int,
    teacher_weights: str | Path | None = None,
    sam_checkpoint: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """The teacher whose outputs a cache holds, and the id that ties the cache to it.

    ``fine_tuned``: the merged LoRA-SAM file written by the teacher's training (id: its SHA-256).
    ``frozen``: the original SAM, not fine-tuned (task-agnostic KD; id: the checkpoint's SHA-256, or the
    variant and seed of a random initialisation).
    """
    if mode == "fine_tuned":
        if not teacher_weights or not Path(teacher_weights).is_file():
            raise FileNotFoundError(f"fine-tuned teacher {teacher_weights or '(not set)'} not found; train the teacher bundle first (it writes models/teacher_merged.safetensors)")
        model = build_lora_sam(variant, num_classes, image_size, random_init=True, weights=teacher_weights)
        return model, teacher_id(mode, variant, teacher_weights)
    if mode == "frozen":
        torch.manual_seed(seed)
        model = build_prompt_free_sam(variant, num_classes, image_size, sam_checkpoint, random_init)
        return model, teacher_id(mode, variant, None, sam_checkpoint, random_init, seed)
    raise ValueError(f"cache mode must be 'fine_tuned' or 'frozen', got {mode!r}")
