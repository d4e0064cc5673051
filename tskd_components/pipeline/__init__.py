"""One-command pipeline and experiments: the bundles chained through ``monai.bundle``, resumable, with a report."""

from .experiment import METHODS, SCALES, Experiment, ExperimentSpec, Scale, collect_results
from .report import write_report
from .stages import Stage, run_bundle
