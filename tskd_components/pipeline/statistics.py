"""Statistics over seeds: means with 95% confidence intervals and paired method differences.

Seeds are the unit of replication: a seed redraws the labels and re-runs every stage, so two methods run with the
same seed form a pair. A difference is called "better" or "worse" only where its 95% CI (Student t over the paired
seeds) excludes 0; otherwise the report says the data show no difference.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Iterable, Sequence

from scipy.stats import t as student_t

# metric -> +1 if higher is better, -1 if lower is better
DIRECTION = {"dice": 1, "nsd": 1, "hd95": -1}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the (low, high) bounds of its t confidence interval; bounds are NaN with fewer than 2 values."""
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = student_t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(mean - half), float(mean + half)


def verdict(low: float, high: float, direction: int) -> str:
    """'better' / 'worse' when the CI of (reference - other) excludes 0, else 'no difference shown'."""
    if math.isnan(low) or math.isnan(high):
        return "too few seeds"
    if low > 0 or high < 0:
        return "better" if (low > 0) == (direction > 0) else "worse"
    return "no difference shown"


# methods whose training compute is not matched with TS-KD's (why): their paired CIs are given, "better" is not said
NOT_MATCHED = {"scratch": "fewer steps", "unet_scratch": "another network, its own steps", "mae_imagenet": "pre-trained elsewhere",
               "mocov3": "half the pre-training steps, two views each"}


def unmatched_verdict(verdict_text: str, reason: str) -> str:
    """The verdict of a comparison at unmatched compute: the CI is reported, "better" / "worse" is not said."""
    return f"CI excludes 0; compute not matched ({reason})" if verdict_text in ("better", "worse") else verdict_text


def paired_differences(rows: Iterable[dict[str, Any]], reference: str = "ts_kd", metric: str = "dice",
                       group_keys: Sequence[str] = ("dataset", "variant", "num_labeled"), by: str = "method") -> list[dict[str, Any]]:
    """``reference`` minus every other level of ``by`` (a method, or with ``by="variant"`` and ``method`` among the
    group keys, a variant of the settings), paired by seed within each group; one row per (group, level) with the
    mean difference, its 95% CI, the number of pairs and the verdict."""
    cells: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("status") == "ok" and r.get(metric) is not None:
            cells[tuple(r.get(k, "") for k in group_keys)][r.get(by, "")][int(r["seed"])] = float(r[metric])
    out = []
    for group, methods in sorted(cells.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if reference not in methods:
            continue
        for method, by_seed in methods.items():
            if method == reference:
                continue
            seeds = sorted(set(by_seed) & set(methods[reference]))
            diffs = [methods[reference][s] - by_seed[s] for s in seeds]
            mean, low, high = mean_ci(diffs)
            out.append({**dict(zip(group_keys, group)), "reference": reference, by: method, "metric": metric,
                        "pairs": len(seeds), "mean_diff": mean, "ci_low": low, "ci_high": high,
                        "verdict": verdict(low, high, DIRECTION.get(metric, 1)) if seeds else "no paired seeds"})
    return out
