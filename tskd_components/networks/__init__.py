"""Networks: the ViT-Tiny segmentation student and the LoRA-SAM teacher."""

from .lora_sam import LoRASAMSegmenter, PromptFreeSAM, build_lora_sam, build_prompt_free_sam, load_teacher_weights, save_teacher
from .student import LoadReport, UNETRDecoder, ViTTinySegmenter, export_student, init_student, load_student_weights
