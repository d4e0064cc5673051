"""One-command pipeline and experiments: the bundles chained through ``monai.bundle``, resumable, with a report."""

from .experiment import METHODS, Experiment, ExperimentSpec, collect_results
from .scales import SCALES, Scale
from .report import write_report
from .stages import Stage, run_bundle
