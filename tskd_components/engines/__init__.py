"""Generic Ignite handlers of the bundles' trainers and evaluators, and the handler chains they share."""

from .handlers import (
    AtomicCheckpointSaver,
    EarlyStopping,
    LossProgressBar,
    NaNGuard,
    ResumeFromCheckpoint,
    RunRecorder,
    TrainingCurves,
    TrainingSummary,
    latest_checkpoint,
    plot_training_curves,
)
from .training import training_handlers, validation_handlers
from .metrics import METRICS_FILE, EmptyPredictionMetric, HD95Metric, MetricsReport, evaluation_metrics, native_resolution_postprocessing
