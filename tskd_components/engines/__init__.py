"""Ignite handlers used by the bundles' trainers and evaluators."""

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
