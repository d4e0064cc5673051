"""Generic Ignite handlers of the bundles' trainers and evaluators, and the handler chains they share."""

from .checkpoint import AtomicCheckpointSaver, latest_checkpoint
from .handlers import (
    EarlyStopping,
    LossProgressBar,
    NaNGuard,
    ResumeFromCheckpoint,
    RunRecorder,
    StepLimit,
    TrainingCurves,
    TrainingSummary,
    plot_training_curves,
)
from .training import TrainingHandlers, training_handlers, validation_handlers
from .metrics import METRICS_FILE, EmptyPredictionMetric, HD95Metric, MetricsReport, evaluation_metrics, native_resolution_postprocessing
