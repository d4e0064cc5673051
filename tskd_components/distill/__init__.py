"""Task-specific (TS-KD) and task-agnostic (TA-KD) knowledge distillation: the teacher and its cache, the
distillation step and the losses."""

from .cache import StaleCacheError, TeacherCache, TeacherCacheWriter, build_teacher_cache, load_teacher, teacher_id
from .losses import FeatureAlignment, PredictionAlignment, TaskAgnosticKDLoss, TaskSpecificKDLoss
from .step import DistillationStep, TeacherTargetsd, distillation_augmentation
