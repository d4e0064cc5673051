"""TSKD: task-specific knowledge distillation from Segment Anything into small medical segmentation students.

The MONAI bundles in ``bundles/`` configure the classes and functions of this package.
"""

from . import data, deploy, engines, losses, networks, ssl, synthesis, utils, visualize

__version__ = "0.1.0"
