"""Networks: the segmentation students (registry), prompt-free SAM (variant registry) and its LoRA adaptation."""

from .decoders import UNETRDecoder
from .layers import evenly_spaced_blocks
from .lora import AdaptedWeights, LoRASAMSegmenter, build_lora_sam, export_teacher, load_teacher_weights, merged_sam, save_teacher
from .sam import SAM_VARIANTS, PromptFreeSAM, SamSpec, build_prompt_free_sam, register_sam_variant, sam_hidden_layers, sam_spec
from .student import ViTSegmenter, create_student, list_students, register_student
from .hierarchical import HierarchicalSegmenter  # registers tiny_vit_5m
from .student_weights import LoadReport, export_student, init_student, load_student_weights, require_trained_student, trained_decoder
