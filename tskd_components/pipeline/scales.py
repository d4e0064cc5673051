"""Named experiment scales: sizes and schedules of every stage, from test size to the paper's GPU size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """Sizes and schedules of one experiment scale. Steps are optimiser iterations (epochs follow the label budget).

    Args:
        image_size: student and teacher input size (px).
        sam_variant: teacher architecture (a registered SAM variant).
        random_init: teacher built untrained (no SAM weights) instead of from ``--sam-checkpoint``.
        teacher_train_encoder: also train the teacher's encoder weights (only sensible with ``random_init``).
        teacher_steps, teacher_batch: teacher fine-tuning schedule.
        lora_rank: LoRA rank of the teacher (alpha = rank).
        distill_epochs: distillation epochs over the transfer set.
        mae_epochs, mocov3_epochs: self-supervised baselines' epochs over the transfer set.
        finetune_steps, finetune_batch: student fine-tuning schedule.
        synthesis_image_size, synthesis_epochs, ddim_steps: diffusion model size, training and sampling steps.
        finetune_patience: fine-tuning stops after this many validations without a better validation Dice
            (``finetune_steps`` is then the cap); 0 runs every method for exactly ``finetune_steps``.
        finetune_warmup: the first this many validations (of 20 over the cap) are a warm-up the patience ignores.
    """

    image_size: int
    sam_variant: str
    random_init: bool
    teacher_train_encoder: bool
    teacher_steps: int
    teacher_batch: int
    lora_rank: int
    distill_epochs: int
    mae_epochs: int
    mocov3_epochs: int
    finetune_steps: int
    finetune_batch: int
    synthesis_image_size: int
    synthesis_epochs: int
    ddim_steps: int
    finetune_patience: int = 0
    finetune_warmup: int = 0


SCALES = {
    # test size: the real ViT-Tiny student and a tiny SAM of the real classes at 64 px
    "tiny": Scale(image_size=64, sam_variant="tiny", random_init=True, teacher_train_encoder=True, teacher_steps=4, teacher_batch=4,
                  lora_rank=4, distill_epochs=1, mae_epochs=1, mocov3_epochs=1, finetune_steps=4, finetune_batch=4,
                  synthesis_image_size=32, synthesis_epochs=1, ddim_steps=4),
    # CPU size: SAM `small` architecture trained here from random init (no SAM weights on CPU machines)
    "small": Scale(image_size=128, sam_variant="small", random_init=True, teacher_train_encoder=True, teacher_steps=300, teacher_batch=8,
                   lora_rank=4, distill_epochs=10, mae_epochs=20, mocov3_epochs=10, finetune_steps=100, finetune_batch=8,
                   synthesis_image_size=64, synthesis_epochs=25, ddim_steps=25),
    # CPU size with a pre-trained teacher: the foundation stand-in (`tskd foundation`, --sam-checkpoint), LoRA on its
    # frozen encoder; every method fine-tunes until validation Dice stalls for 5 validations after a warm-up of 5
    # (validations every 20 steps, cap 400; before 2026-11-28 without the warm-up)
    "standin": Scale(image_size=128, sam_variant="standin", random_init=False, teacher_train_encoder=False, teacher_steps=300,
                     teacher_batch=8, lora_rank=4, distill_epochs=10, mae_epochs=20, mocov3_epochs=10, finetune_steps=400,
                     finetune_batch=8, synthesis_image_size=64, synthesis_epochs=25, ddim_steps=25, finetune_patience=5,
                     finetune_warmup=5),
    # GPU size: SAM vit_b from the official checkpoint (--sam-checkpoint), LoRA on the frozen encoder
    "paper": Scale(image_size=256, sam_variant="vit_b", random_init=False, teacher_train_encoder=False, teacher_steps=3000, teacher_batch=8,
                   lora_rank=4, distill_epochs=100, mae_epochs=400, mocov3_epochs=200, finetune_steps=2000, finetune_batch=8,
                   synthesis_image_size=128, synthesis_epochs=500, ddim_steps=50),
}
