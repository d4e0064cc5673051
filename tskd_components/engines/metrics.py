"""Segmentation metrics at each image's native resolution, with failures counted instead of dropped.

MONAI's Hausdorff distance is NaN when a class is in the ground truth but not in the prediction (or the reverse),
so a mean over images silently skips exactly the worst cases. :class:`HD95Metric` scores such a case as the image
diagonal (the largest distance possible in the image) and :class:`EmptyPredictionMetric` counts the cases where a
class of the ground truth was not predicted at all. A class absent from both stays NaN (nothing to measure).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric, HausdorffDistanceMetric, SurfaceDiceMetric
from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd, DeleteItemsd, Invertd

from ..utils.io import write_json

METRICS_FILE = "metrics.json"
NATIVE_LABEL = "label_native"  # the mask as loaded, kept by preprocessing(keep_native_label=True)


def _foreground(y: torch.Tensor, include_background: bool) -> torch.Tensor:
    """(B, C, H, W) one-hot -> (B, C') presence of each (foreground) class."""
    y = y if include_background else y[:, 1:]
    return y.flatten(2).any(-1)


class HD95Metric(HausdorffDistanceMetric):
    """95th-percentile Hausdorff distance in pixels of the images it is given; a class present in exactly one of
    prediction and ground truth scores the image diagonal ``sqrt(H^2 + W^2)`` instead of NaN.

    Inputs are one-hot (B, C, H, W) tensors; returns (B, C') distances."""

    def __init__(self, include_background: bool = False, **kwargs: Any) -> None:
        super().__init__(include_background=include_background, percentile=95, **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        distances = super()._compute_tensor(y_pred, y, **kwargs)
        in_pred, in_gt = _foreground(y_pred, self.include_background), _foreground(y, self.include_background)
        diagonal = math.hypot(*y.shape[2:])
        missing = (in_pred != in_gt).to(distances.device)
        return torch.where(missing, torch.full_like(distances, diagonal), distances)


class EmptyPredictionMetric(CumulativeIterationMetric):
    """1 where a class is in the ground truth and absent from the prediction, else 0; (B, C') per image and class."""

    def __init__(self, include_background: bool = False) -> None:
        super().__init__()
        self.include_background = include_background

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        in_pred, in_gt = _foreground(y_pred, self.include_background), _foreground(y, self.include_background)
        return (in_gt & ~in_pred).float()

    def aggregate(self) -> torch.Tensor:
        """Number of such (image, class) cases."""
        return self.get_buffer().sum()


def evaluation_metrics(num_classes: int, nsd_tolerance: float) -> dict[str, Any]:
    """The additional metrics of an evaluation (the key metric, Dice, stays in the config): ``hd95`` (failures =
    diagonal), ``nsd`` (surface Dice at ``nsd_tolerance`` pixels) and ``empty_predictions`` (count), comparing
    the engine output's ``pred`` with its ``label``."""
    transform = from_engine(["pred", "label"])
    return {
        "hd95": IgniteMetricHandler(metric_fn=HD95Metric(include_background=False), output_transform=transform),
        "nsd": IgniteMetricHandler(metric_fn=SurfaceDiceMetric([nsd_tolerance] * (num_classes - 1), include_background=False),
                                   output_transform=transform),
        "empty_predictions": IgniteMetricHandler(metric_fn=EmptyPredictionMetric(), output_transform=transform),
    }


def native_resolution_postprocessing(preprocessing: Compose, num_classes: int, extra: Sequence[Any] = ()) -> Compose:
    """Softmax, then the prediction resized back to the image's original size by inverting ``preprocessing``
    (``monai.transforms.Invertd``), then argmax. ``label`` of the engine output becomes the mask as loaded
    (``preprocessing(..., keep_native_label=True)`` keeps it), so every metric compares ``pred`` and ``label`` as
    one-hot maps at native resolution. ``extra`` transforms (e.g. overlay saving) run last."""
    return Compose([
        Activationsd("pred", softmax=True),
        Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted(["pred", NATIVE_LABEL], argmax=[True, False], to_onehot=[num_classes, num_classes]),
        DeleteItemsd("label"),
        CopyItemsd(NATIVE_LABEL, names="label"),
        *extra,
    ])


class MetricsReport:
    """At the end of an evaluation, write ``metrics.json`` (mean and per-class values of every metric computed
    with ``save_details``) into ``output_dir`` and print it as JSON. ``count_metrics`` (e.g.
    ``empty_predictions``) are reported as totals over images instead of means."""

    def __init__(self, output_dir: str, class_names: Sequence[str], extra: Mapping[str, Any] | None = None,
                 count_metrics: Sequence[str] = ("empty_predictions",)) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.extra = dict(extra or {})
        self.count_metrics = set(count_metrics)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> dict[str, Any]:
        report: dict[str, Any] = {**self.extra, "num_images": len(engine.data_loader.dataset), "metrics": {}}
        details = getattr(engine.state, "metric_details", {}) or {}
        for name, value in engine.state.metrics.items():
            entry: dict[str, Any] = {"mean": _finite_or_none(value)}
            if name in details:
                scores = torch.as_tensor(details[name], dtype=torch.float32)
                if name in self.count_metrics:
                    entry = {"total": int(scores.nansum()), "per_class": dict(zip(self.class_names, scores.nansum(0).int().tolist()))}
                else:
                    scores = torch.where(torch.isinf(scores), torch.nan, scores)
                    entry["mean"] = _finite_or_none(torch.nanmean(scores))
                    entry["per_class"] = {n: _finite_or_none(v) for n, v in zip(self.class_names, torch.nanmean(scores, dim=0).tolist())}
            report["metrics"][name] = entry
        write_json(self.output_dir / METRICS_FILE, report)
        print(json.dumps(report, indent=1))
        return report


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
