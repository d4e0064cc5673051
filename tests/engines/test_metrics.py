import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import DiceMetric, SurfaceDiceMetric

from tskd_components.data import preprocessing
from tskd_components.engines import EmptyPredictionMetric, HD95Metric, native_resolution_postprocessing


def square(x0: int, size=(40, 50), present: bool = True) -> torch.Tensor:
    """One-hot (1, 2, H, W): a 20 x 20 square of class 1 with its left edge at column x0."""
    m = torch.zeros(1, 2, *size)
    if present:
        m[0, 1, 10:30, x0:x0 + 20] = 1
    m[0, 0] = 1 - m[0, 1]
    return m


def test_shifted_square_has_the_hand_computed_dice_hd95_and_nsd():
    # squares of side 20 shifted by 4 px: overlap 16 x 20 -> Dice 2*320/800 = 0.8; every boundary pixel is within
    # 4 px of the other boundary and 32 of the 76 are exactly 4 away -> HD95 = 4; 40 of 76 within 2 px -> NSD 40/76
    gt, pred = square(5), square(9)
    assert DiceMetric(include_background=False)(pred, gt).item() == pytest.approx(0.8)
    assert HD95Metric()(pred, gt).item() == pytest.approx(4.0)
    assert SurfaceDiceMetric([2.0], include_background=False)(pred, gt).item() == pytest.approx(40 / 76)


def test_a_missed_class_scores_the_image_diagonal_and_is_counted():
    gt, empty = square(5), square(5, present=False)
    diagonal = math.hypot(40, 50)
    assert HD95Metric()(empty, gt).item() == pytest.approx(diagonal)  # MONAI alone gives NaN: the case would be dropped
    assert HD95Metric()(gt, empty).item() == pytest.approx(diagonal)  # a class predicted where there is none
    assert math.isnan(HD95Metric()(empty, empty).item())  # absent from both: nothing to measure
    counter = EmptyPredictionMetric()
    counter(torch.cat([empty, square(9), empty]), torch.cat([gt, gt, empty]))
    assert counter.aggregate().item() == 1


def test_predictions_are_scored_at_the_native_size(hc18):
    from tskd_components.data import load_datalist

    item = load_datalist(hc18, "test")[0]
    pre = preprocessing(64, num_classes=2, channels=3, keep_native_label=True)
    data = pre(dict(item))
    native = data["label_native"]
    assert tuple(data["label"].shape[1:]) == (64, 64) and tuple(native.shape[1:]) != (64, 64)
    # a "perfect" prediction at 64 px: the resized mask as logits
    logits = torch.cat([1 - data["label"], data["label"]]) * 10
    out = native_resolution_postprocessing(pre, num_classes=2)({**data, "pred": MetaTensor(logits)})
    assert tuple(out["pred"].shape[1:]) == tuple(native.shape[1:]) == tuple(out["label"].shape[1:])
    dice = DiceMetric(include_background=False)(out["pred"][None], out["label"][None]).item()
    assert 0.9 < dice < 1.0  # the 64 px round trip loses only boundary pixels
    assert np.array_equal(out["label"][1].numpy() > 0, native[0].numpy() > 0)
