"""Foundation stand-in: a SAM-architecture model pre-trained here, promptable and class-agnostic, on a pool of
datasets disjoint from the targets, and saved with the official SAM keys (no SAM weights reach our machines)."""

from .evaluate import box_prompt_dice, standin_report
from .model import CHECKPOINT_FILE, RECORD_FILE, build_promptable_sam, prompt_masks, read_standin_record, save_standin
from .pool import balanced_sampler, pool_datalist, resolve_pool, resolve_targets
from .prompts import jitter_box, mask_box, random_point
from .step import PromptableStep
