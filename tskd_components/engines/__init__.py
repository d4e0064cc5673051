"""Generic Ignite handlers of the bundles' trainers and evaluators, and the handler chains they share."""

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
from .training import training_handlers, validation_handlers
from .metrics import EmptyPredictionMetric, HD95Metric, evaluation_metrics, native_resolution_postprocessing
