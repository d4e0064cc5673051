import math

import pytest

from tskd_components.pipeline.statistics import mean_ci, paired_differences, verdict


def test_mean_ci_is_the_student_t_interval():
    mean, low, high = mean_ci([1.0, 2.0, 3.0])  # sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5) and mean - low == pytest.approx(high - mean)
    assert math.isnan(mean_ci([0.5])[1]) and math.isnan(mean_ci([])[0])


def rows(pairs, metric="dice"):
    return [{"status": "ok", "dataset": "hc18", "variant": "", "num_labeled": 10, "seed": s, "method": m, metric: v}
            for s, (ref, other) in enumerate(pairs) for m, v in (("ts_kd", ref), ("scratch", other))]


def test_paired_differences_pair_by_seed_and_call_only_what_the_ci_shows():
    better = paired_differences(rows([(0.80, 0.70), (0.82, 0.71), (0.79, 0.72)]))
    assert len(better) == 1 and better[0]["pairs"] == 3 and better[0]["verdict"] == "better"
    assert better[0]["mean_diff"] == pytest.approx(0.28 / 3)
    # a large mean gain with seed-to-seed sign changes is not called better
    noisy = paired_differences(rows([(0.90, 0.70), (0.70, 0.75), (0.85, 0.80)]))
    assert noisy[0]["mean_diff"] > 0 and noisy[0]["verdict"] == "no difference shown"
    # lower HD95 is better: a negative difference whose CI excludes 0 is "better"
    hd = paired_differences(rows([(10.0, 14.0), (11.0, 15.5), (9.0, 12.0)], "hd95"), metric="hd95")
    assert hd[0]["verdict"] == "better" and hd[0]["ci_high"] < 0
    assert verdict(-0.1, -0.05, 1) == "worse" and verdict(float("nan"), float("nan"), 1) == "too few seeds"


def test_unpaired_seeds_are_not_compared():
    r = rows([(0.8, 0.7), (0.9, 0.6)])
    r = [x for x in r if not (x["method"] == "scratch" and x["seed"] == 1)]
    diff = paired_differences(r)[0]
    assert diff["pairs"] == 1 and diff["verdict"] == "too few seeds"
