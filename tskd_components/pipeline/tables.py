"""Markdown tables of an experiment's result rows: mean ± std per method and label budget, optimizer steps, paired
differences with their CIs, Dice per class, empty-prediction counts."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.dataset import read_split
from ..engines.metrics import METRICS_FILE
from .experiment import METHODS
from .stages import LEGACY_STUDENT
from .statistics import NOT_MATCHED, paired_differences, unmatched_verdict
from .stopping import merge_fixed
from .variants import format_ci

METRICS = (("dice", "Dice", "higher is better"), ("hd95", "HD95 (px)", "lower is better"), ("nsd", "NSD", "higher is better"))
LABELS = {"scratch": "ViT-Tiny scratch", "scratch_matched": "ViT-Tiny scratch, matched steps", "unet_scratch": "UNet scratch (reference)", "mae_imagenet": "MAE (ImageNet)",
          "mae": "MAE (transfer set)", "mocov3": "MoCo v3", "ta_kd": "TA-KD", "ts_kd": "TS-KD"}


ENCODER_NAMES = {"vit_tiny": "ViT-Tiny", "tiny_vit_5m": "TinyViT-5M"}


def student_of(row: dict[str, Any]) -> str:
    """The row's student, "<encoder> + <decoder>" (rows written before results named it: the then default)."""
    return row.get("student") or " + ".join(LEGACY_STUDENT.values())


def method_label(method: str, student: str = "") -> str:
    """The method's name in tables; the random-init rows name the student's encoder ("TinyViT-5M scratch")."""
    encoder = student.split(" + ")[0]
    return LABELS.get(method, method).replace("ViT-Tiny", ENCODER_NAMES.get(encoder, encoder)) if encoder else LABELS.get(method, method)


def panel_students(rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The ViT student of each panel (dataset and variant); the UNet reference is not one."""
    return {panel_name(r): student_of(r) for r in rows if r.get("method") != "unet_scratch"}


def group_cells(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            groups[(panel_name(r), r["method"], int(r["num_labeled"]))].append(r)
    return groups


def panel_name(row: dict[str, Any]) -> str:
    return row["dataset"] + (f" [{row['variant']}]" if row.get("variant") else "")


def _val_note(groups: dict, panel: str) -> str:
    """' (+V val)': the validation labels every method also used (checkpoint selection, early stopping)."""
    row = next(r for (p, _, _), rs in groups.items() if p == panel for r in rs)
    return f" (+{len(read_split(row['dataset_dir'])['val'])} val)" if row.get("dataset_dir") else ""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table per dataset (and variant) and metric: methods x label budgets, mean ± std over seeds (n seeds)."""
    groups = group_cells(rows)
    panels = sorted({p for p, _, _ in groups})
    students = panel_students(rows)
    lines = []
    for panel in panels:
        budgets = sorted({n for p, _, n in groups if p == panel})
        methods = [m for m in METHODS if any((panel, m, n) in groups for n in budgets)]
        header = " | ".join(f"{n} labels{_val_note(groups, panel)}" for n in budgets)
        for key, title, better in METRICS:
            lines += [f"### {panel}: {title} ({better})", "", f"| method | {header} |", "|---|" + "---|" * len(budgets)]
            for m in methods:
                cells = []
                for n in budgets:
                    group = groups.get((panel, m, n), [])
                    mu, sd = mean_std([r.get(key) for r in group])
                    cells.append(f"{mu:.3f} ± {sd:.3f} (n={len(group)})" if group else "–")
                lines.append(f"| {method_label(m, students.get(panel, ''))} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [f"### {panel}: optimizer steps, pre-training + fine-tuning (mean over seeds)", "", f"| method | {header} |",
                  "|---|" + "---|" * len(budgets)]
        for m in methods:
            cells = []
            for n in budgets:
                group = [r for r in groups.get((panel, m, n), []) if r.get("steps") is not None]
                cells.append(f"{statistics.fmean(r.get('pretrain_steps') or 0 for r in group):.0f} + "
                             f"{statistics.fmean(r['steps'] for r in group):.0f}" if group else "–")
            lines.append(f"| {method_label(m, students.get(panel, ''))} | " + " | ".join(cells) + " |")
        lines.append("")
        for n in budgets:
            rules = defaultdict(list)  # a rule -> its methods; fixed step counts (one per seed) as one range
            for m in methods:
                for rule in merge_fixed({r["stopping"] for r in groups.get((panel, m, n), []) if r.get("stopping")}):
                    rules[rule].append(method_label(m, students.get(panel, "")))
            lines += [f"Stopping at {n} labels: " + "; ".join(f"{rule} ({', '.join(ms)})" for rule, ms in rules.items()), ""] if rules else []
    not_run = sorted({(r["dataset"], r["method"], r["status"]) for r in rows if r.get("status") != "ok"})
    if not_run:
        lines += ["### Not run", ""] + [f"- {d} / {LABELS.get(m, m)}: {s}" for d, m, s in not_run] + [""]
    return "\n".join(lines)


def paired_markdown(rows: Sequence[dict[str, Any]], reference: str = "ts_kd") -> str:
    """Tables of ``reference`` minus each other method, paired by seed: mean difference [95% CI] and verdict."""
    lines, students = [], panel_students(rows)
    for key, title, better in METRICS:
        diffs = paired_differences(rows, reference, key)
        if not diffs:
            continue
        lines += [f"### {LABELS.get(reference, reference)} − other method: {title} ({better}), paired by seed", "",
                  "| dataset | labels | method | pairs | mean difference [95% CI] | verdict |", "|---|---|---|---|---|---|"]
        for d in diffs:
            panel = panel_name(d)
            lines.append(f"| {panel} | {d['num_labeled']} | {method_label(d['method'], students.get(panel, ''))} | {d['pairs']} | "
                         f"{d['mean_diff']:+.3f} {format_ci(d)} | {paired_verdict(d)} |")
        lines.append("")
    return "\n".join(lines)


def paired_verdict(d: dict[str, Any]) -> str:
    """A paired row's verdict; against a method of :data:`NOT_MATCHED` a CI excluding 0 is stated, not called better."""
    return unmatched_verdict(d["verdict"], NOT_MATCHED[d["method"]]) if d["method"] in NOT_MATCHED else d["verdict"]


def per_class_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Test Dice per class (mean ± std over seeds) for datasets with more than one foreground class, from each row's
    ``dice_per_class`` or else its cell's ``metrics.json`` (beside its ``masks_dir``); empty when every dataset has a
    single class."""
    per_class: dict[tuple[str, int, str], list[dict[str, float]]] = defaultdict(list)
    for r in rows:
        metrics = Path(r.get("masks_dir") or "").parent / METRICS_FILE
        scores = r.get("dice_per_class") or {}
        if not scores and r.get("masks_dir") and metrics.is_file():
            scores = json.loads(metrics.read_text())["metrics"]["mean_dice"].get("per_class", {})
        if r.get("status") == "ok" and len(scores) > 1:
            per_class[(panel_name(r), int(r["num_labeled"]), r["method"])].append(scores)
    lines, students = [], panel_students(rows)
    for panel, n in sorted({(p, n) for p, n, _ in per_class}):
        methods = [m for m in METHODS if (panel, n, m) in per_class]
        classes = list(per_class[(panel, n, methods[0])][0])
        lines += [f"### {panel}, {n} labels: Dice per class", "", "| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for m in methods:
            cells = [mean_std([s.get(c) for s in per_class[(panel, n, m)]]) for c in classes]
            lines.append(f"| {method_label(m, students.get(panel, ''))} | " + " | ".join(f"{mu:.3f} ± {sd:.3f}" for mu, sd in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def empty_predictions_line(rows: Sequence[dict[str, Any]]) -> str:
    """The count of test images with a ground-truth class the student did not predict at all, over every finished
    cell, and per dataset / method / budget where there are any (summed over seeds)."""
    counts: dict[tuple[str, str, int], int] = defaultdict(int)
    for r in rows:
        if r.get("status") == "ok":
            counts[(panel_name(r), method_label(r["method"], student_of(r)), int(r["num_labeled"]))] += int(r.get("empty_predictions") or 0)
    where = ", ".join(f"{panel} {label} n{n}: {c}" for (panel, label, n), c in sorted(counts.items()) if c)
    return (f"Empty predictions (a ground-truth class not predicted at all), over all cells: {sum(counts.values())}"
            + (f" ({where})." if where else "."))
