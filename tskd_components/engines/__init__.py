"""Ignite handlers and iteration steps used by the bundles' trainers and evaluators."""

from .distillation import DistillationStep, TeacherTargetsd, distillation_augmentation
from .handlers import (
    AtomicCheckpointSaver,
    LossProgressBar,
    MetricsReport,
    NaNGuard,
    ResumeFromCheckpoint,
    RunRecorder,
    TrainingCurves,
    latest_checkpoint,
    plot_training_curves,
)
