"""Networks: the ViT-Tiny segmentation student (and, later, the LoRA-SAM teacher)."""

from .student import LoadReport, UNETRDecoder, ViTTinySegmenter, init_student, load_student_weights
