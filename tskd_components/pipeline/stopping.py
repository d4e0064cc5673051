"""How a fine-tuning run stops, as result rows and reports state it, and which results of an earlier stopping rule
still hold under the current one.

A rule reads ``fixed 690 steps`` (no early stopping: the matched-steps control, or a scale without patience) or
``patience 5 of 20 validations after 5 warm-up, cap 400 steps`` (stop after 5 validations without a better
validation Dice; the first 5 validations neither count nor set the bar; at most 400 steps). Rows written before
rows carried their rule (2026-11-28) ran under their scale's rule of that time, without a warm-up.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Sequence

from .scales import SCALES

VALIDATIONS = 20  # validations over the step cap when a run may stop early
_EARLY = re.compile(r"patience (\d+) of \d+ validations(?: after (\d+) warm-up)?, cap (\d+) steps")


def stopping_rule(patience: int, warmup: int, steps: int) -> str:
    """The rule of a run with ``patience`` (0: none) after ``warmup`` validations, capped at (or fixed to) ``steps``."""
    if not patience:
        return f"fixed {steps} steps"
    return f"patience {patience} of {VALIDATIONS} validations" + (f" after {warmup} warm-up" if warmup else "") + f", cap {steps} steps"


def merge_fixed(rules: set[str]) -> list[str]:
    """``rules`` sorted, their fixed step counts (one per seed for the matched control) read as one range."""
    fixed = sorted(int(rule.split()[1]) for rule in rules if rule.startswith("fixed "))
    merged = {rule for rule in rules if not rule.startswith("fixed ")}
    if fixed:
        merged.add(f"fixed {fixed[0]} steps" if fixed[0] == fixed[-1] else f"fixed {fixed[0]}-{fixed[-1]} steps")
    return sorted(merged)


def rule_of(row: dict[str, Any]) -> str:
    """A row's stopping rule: the one it states, or for a row written before rows stated it, its scale's rule then."""
    if row.get("stopping"):
        return row["stopping"]
    if row["method"] == "scratch_matched" or not SCALES[row["scale"]].finetune_patience:
        return stopping_rule(0, 0, int(row["steps"]))
    return stopping_rule(SCALES[row["scale"]].finetune_patience, 0, SCALES[row["scale"]].finetune_steps)


def same_run_under(steps: int, patience: int, cap: int, warmup: int) -> bool:
    """Whether a run that stopped at ``steps`` without a warm-up runs identically with one of ``warmup`` validations:
    it ran to the cap (a warm-up only delays stopping), or its best validation came after the warm-up (it stopped
    ``patience`` validations after it, and so would it with the warm-up)."""
    return steps >= cap or round(steps * VALIDATIONS / cap) - patience > warmup


def reconcile_stopping(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``rows`` with every row's ``stopping`` stated, and notes for the report: per dataset and budget whose
    early-stopped cells ran under two rules, and per table run without a warm-up whose cells stopped inside the one
    their scale has now. Methods compared in one table must share a stopping rule: a cell run without the warm-up of
    the others' rule counts as run under it when :func:`same_run_under` says its run is the same; any other mix is
    an error naming the cells to re-run."""
    rows = [{**r, "stopping": rule_of(r)} if r.get("status") == "ok" else dict(r) for r in rows]
    groups = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok" and _EARLY.fullmatch(r["stopping"]):
            groups[(r["dataset"], r.get("variant") or "", int(r["num_labeled"]))].append(r)
    notes = []
    for (dataset, variant, n), group in sorted(groups.items()):
        rules = {r["stopping"] for r in group}
        name = f"{dataset}{' ' + variant if variant else ''}"
        if len(rules) == 1:
            notes += _inside_todays_warmup(name, n, group)
            continue
        current = max(rules, key=lambda rule: int(_EARLY.fullmatch(rule).group(2) or 0))
        patience, warmup, cap = (int(g or 0) for g in _EARLY.fullmatch(current).groups())
        earlier = [r for r in group if r["stopping"] != current]
        stale = [r for r in earlier if _EARLY.fullmatch(r["stopping"]).groups() != (str(patience), None, str(cap))
                 or not same_run_under(int(r["steps"]), patience, cap, warmup)]
        if stale:
            cells = ", ".join(f"{r['method']} seed {r['seed']} ({r['stopping']}, stopped at step {int(r['steps'])})" for r in stale)
            raise ValueError(f"{name} n{n}: cells ran under another stopping rule than "
                             f"'{current}' and their runs would differ under it: {cells}; re-run them with "
                             f"`tskd experiment` (methods and seeds as named) so that every method shares one rule")
        for r in earlier:
            r["stopping"] = current
        notes.append(f"{name} at {n} labels: {len(earlier)} cells ran before the warm-up "
                     f"existed and stopped after it would have ended (or ran to the cap), so their runs are the same under '{current}'")
    return rows, notes


def _inside_todays_warmup(name: str, n: int, group: Sequence[dict[str, Any]]) -> list[str]:
    """A note on the cells of a table run without a warm-up that stopped inside the warm-up their scale has now (the
    current rule would have run them on): their checkpoints may be an early, degenerate peak of validation Dice."""
    patience, warmup, cap = (int(g or 0) for g in _EARLY.fullmatch(group[0]["stopping"]).groups())
    now = SCALES[group[0]["scale"]].finetune_warmup if group[0].get("scale") in SCALES else 0
    if warmup or not now:
        return []
    inside = [r for r in group if not same_run_under(int(r["steps"]), patience, cap, now)]
    cells = ", ".join(f"{r['method']} s{r['seed']} ({int(r['steps'])}, Dice {r['dice']:.3f})" for r in inside)
    return [f"{name} at {n} labels ran without a warm-up; {len(inside)} of {len(group)} cells under early stopping stopped within what "
            f"is now the {now}-validation warm-up and would run on under the current rule (steps, Dice): {cells}"] if inside else []
