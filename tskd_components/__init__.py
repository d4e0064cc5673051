"""TSKD: task-specific knowledge distillation from Segment Anything into small medical segmentation students.

The MONAI bundles in ``bundles/`` configure the classes and functions of this package. Subpackages are imported
on first use (``tskd_components.networks`` imports peft and segment-anything, ``synthesis`` diffusers, ``deploy``
onnxruntime), so a bundle loads only the libraries its stage needs.

Layout: ``data`` (dataset reader, transforms), ``networks`` (students, SAM, LoRA), ``engines`` (generic handlers),
``distill`` / ``ssl`` / ``synthesis`` (one package per method), ``utils``, ``visualize``, ``deploy``, and
``pipeline`` (the ``tskd`` command) on top.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
SUBMODULES = ("data", "deploy", "distill", "engines", "foundation", "networks", "pipeline", "ssl", "synthesis", "utils", "visualize")
__all__ = list(SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(SUBMODULES))
