import pytest

from tskd_components.pipeline.stopping import reconcile_stopping, rule_of, same_run_under, stopping_rule
from tskd_components.pipeline.tables import summary_markdown

WARM = "patience 5 of 20 validations after 5 warm-up, cap 400 steps"
COLD = "patience 5 of 20 validations, cap 400 steps"


def cell(method, seed, steps, stopping=None, n=40):
    row = {"dataset": "acdc", "method": method, "num_labeled": n, "seed": seed, "status": "ok", "scale": "standin",
           "dice": 0.3, "hd95": 9.0, "nsd": 0.4, "steps": steps, "pretrain_steps": 0}
    return row | ({"stopping": stopping} if stopping else {})


def test_rules_read_as_the_report_states_them():
    assert stopping_rule(5, 5, 400) == WARM and stopping_rule(5, 0, 400) == COLD and stopping_rule(0, 5, 690) == "fixed 690 steps"
    # rows written before rows stated their rule: the standin scale's rule of that time; the matched control and
    # scales without patience ran a fixed number of steps
    assert rule_of(cell("scratch", 0, 120)) == COLD
    assert rule_of(cell("scratch_matched", 0, 690)) == "fixed 690 steps"
    assert rule_of(cell("scratch", 0, 100) | {"scale": "small"}) == "fixed 100 steps"
    assert rule_of(cell("scratch", 0, 260, WARM)) == WARM


def test_a_run_is_the_same_under_a_warm_up_only_when_its_best_validation_came_after_it():
    # validations every 20 steps: stopping at step 300 means the best was validation 10, after a warm-up of 5
    assert same_run_under(300, patience=5, cap=400, warmup=5)
    assert same_run_under(400, patience=5, cap=400, warmup=5)  # ran to the cap; a warm-up only delays stopping
    assert not same_run_under(120, patience=5, cap=400, warmup=5)  # best at validation 1, inside the warm-up
    assert not same_run_under(200, patience=5, cap=400, warmup=5)  # best at validation 5, the warm-up's last
    assert same_run_under(220, patience=5, cap=400, warmup=5)


def test_cells_of_two_rules_pool_only_when_their_runs_are_the_same():
    rows = [cell("ts_kd", 0, 300), cell("scratch_matched", 0, 690), cell("scratch", 0, 260, WARM), cell("ts_kd", 0, 120, n=10)]
    out, notes = reconcile_stopping(rows)
    assert [r["stopping"] for r in out] == [WARM, "fixed 690 steps", WARM, COLD]  # 10 labels: one rule, left as it is
    # 10 labels ran without the warm-up, and its cell stopped within what is now the warm-up: named, not hidden
    assert notes == ["acdc at 10 labels ran without a warm-up; 1 of 1 cells under early stopping stopped within what is now the "
                     "5-validation warm-up and would run on under the current rule (steps, Dice): ts_kd s0 (120, Dice 0.300)",
                     f"acdc at 40 labels: 1 cells ran before the warm-up existed and stopped after it would have ended (or ran to "
                     f"the cap), so their runs are the same under '{WARM}'"]
    assert reconcile_stopping([cell("ts_kd", 0, 400, n=10)])[1] == []  # ran to the cap: the warm-up changes nothing
    table = summary_markdown([*out, cell("scratch_matched", 1, 720, "fixed 720 steps")])  # one fixed count per seed: a range
    assert f"Stopping at 40 labels: {WARM} (ViT-Tiny scratch, TS-KD); fixed 690-720 steps (ViT-Tiny scratch, matched steps)" in table
    assert f"Stopping at 10 labels: {COLD} (TS-KD)" in table
    # a cell that stopped inside the warm-up would have run differently: refused, naming it
    with pytest.raises(ValueError, match=r"ta_kd seed 0 \(patience 5 of 20 validations, cap 400 steps, stopped at step 120\); re-run"):
        reconcile_stopping([*rows, cell("ta_kd", 0, 120)])
