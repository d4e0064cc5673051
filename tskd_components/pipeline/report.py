"""Experiment report: results CSV, Markdown tables of mean ± std, Figure-3-style curves, Figure-4-style masks."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ..data.dataset import load_datalist, read_dataset_info  # noqa: E402
from ..data.transforms import LoadSliceOrImaged  # noqa: E402
from ..visualize import overlay, to_display  # noqa: E402
from .efficiency import efficiency_markdown, efficiency_rows, stage_seconds  # noqa: E402
from .experiment import METHODS, collect_results  # noqa: E402
from .scales import SCALES  # noqa: E402
from .statistics import mean_ci  # noqa: E402
from .stopping import reconcile_stopping  # noqa: E402
from .tables import (empty_predictions_line, group_cells, method_label, panel_name, panel_students, paired_markdown,  # noqa: E402
                     per_class_markdown, summary_markdown)
from .variants import variant_differences, variants_markdown  # noqa: E402

CSV_COLUMNS = ("dataset", "variant", "method", "student", "num_labeled", "seed", "status", "dice", "hd95", "nsd", "empty_predictions", "pretrain_steps",
               "steps", "stopping", "train_seconds", "teacher",
               "teacher_dice", "scale", "image_size", "transfer_images", "initial_weights", "labeled_ids", "dice_per_class", "source")


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()} for r in rows)
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Result rows of a ``results.csv`` (numbers parsed), e.g. of an experiment whose run folder is gone."""
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        for key in ("dice", "hd95", "nsd", "steps", "pretrain_steps", "transfer_images", "teacher_dice", "train_seconds", "empty_predictions"):
            r[key] = float(r[key]) if r.get(key) not in (None, "") else None
        r["num_labeled"], r["seed"] = int(r["num_labeled"]), int(r["seed"])
        r["dice_per_class"] = json.loads(r["dice_per_class"]) if r.get("dice_per_class") else None
    return rows


def _cell(r: dict[str, Any]) -> tuple:
    return r["dataset"], r.get("variant") or "", r["method"], int(r["num_labeled"]), int(r["seed"])


def _teacher_parts(teacher: str) -> tuple[str, str]:
    """A teacher description split into its pre-trained weights (``SAM standin [... sha256 8c877fe2eb17]``) and its
    settings (``, LoRA r4, encoder frozen, labels: budget`` or ``, frozen``)."""
    weights, _, settings = teacher.rpartition("]")
    return weights + "]", settings


def merge_earlier(rows: Sequence[dict[str, Any]], earlier_csv: str | Path) -> tuple[list[dict[str, Any]], str]:
    """``rows`` plus the cells of an earlier ``results.csv`` (e.g. the committed one of a run folder that is gone)
    that ``rows`` lacks, marked with ``source``; and a line on the cells both hold (the run folder's are kept, and
    how far their Dice is from the earlier one says whether the re-run reproduced it).

    Paired differences compare the methods of one seed, so the cells of one dataset, budget and seed must share one
    foundation model (a stand-in re-trained on another machine has another SHA-256: a seed may move to it whole,
    not in part), and a method's teacher settings (rank, label rule) must match across the two sources."""
    earlier = read_csv(earlier_csv)
    settings = {(r["dataset"], r.get("variant") or "", r["method"]): _teacher_parts(r["teacher"])[1] for r in rows if r.get("teacher")}
    for r in earlier:
        here = settings.get((r["dataset"], r.get("variant") or "", r["method"]))
        if r.get("teacher") and here is not None and here != _teacher_parts(r["teacher"])[1]:
            raise ValueError(f"{earlier_csv}: {r['dataset']} {r['method']} teacher '{r['teacher']}' has other settings than this run "
                             f"folder's ('{here}'); results of different teachers cannot be pooled")
    mine = {_cell(r): r for r in rows}
    both = [(mine[_cell(r)], r) for r in earlier if _cell(r) in mine and r.get("dice") is not None and mine[_cell(r)].get("dice") is not None]
    added = [{**r, "source": str(earlier_csv)} for r in earlier if _cell(r) not in mine]
    foundations = defaultdict(set)
    for r in [*rows, *added]:
        if r.get("teacher"):
            foundations[_cell(r)[:2] + _cell(r)[3:]].add(_teacher_parts(r["teacher"])[0])
    for (dataset, variant, n, seed), found in foundations.items():
        if len(found) > 1:
            raise ValueError(f"{dataset}{' ' + variant if variant else ''} n{n} seed {seed} would pair cells of different teachers "
                             f"({' and '.join(sorted(found))}); results of different teachers cannot be pooled: re-run that seed's "
                             f"teacher methods with one --sam-checkpoint")
    line = f"{len(added)} cells from {earlier_csv} (their run folder is gone: no masks or stage times)"
    if both:
        gap = max(abs(a["dice"] - b["dice"]) for a, b in both)
        line += f"; {len(both)} cells re-run here and in it, largest |Dice difference| {gap:.2g} (this run folder's are used)"
    order = {m: i for i, m in enumerate(METHODS)}
    merged = sorted([*rows, *added], key=lambda r: (r["dataset"], r.get("variant") or "", order.get(r["method"], 99), int(r["num_labeled"]), int(r["seed"])))
    return merged, line + "."


def plot_dice_vs_labels(rows: Sequence[dict[str, Any]], path: str | Path, teacher_rows: Sequence[dict[str, Any]] = ()) -> Path:
    """Figure 3: test Dice against the number of labels (log axis), one panel per dataset, the mean over seeds per
    method with its 95% confidence interval as an error bar (none with a single seed); methods are spread a little
    around each budget so that their bars stay apart."""
    groups = group_cells(rows)
    panels = sorted({p for p, _, _ in groups})
    if not panels:
        raise ValueError("no finished result rows to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colors, students = dict(zip(METHODS, plt.get_cmap("tab10").colors)), panel_students(rows)
    for ax, panel in zip(axes[0], panels):
        present = [m for m in METHODS if any(p == panel and mm == m for p, mm, _ in groups)]
        for k, m in enumerate(present):
            budgets = sorted(n for p, mm, n in groups if p == panel and mm == m)
            stats = np.array([mean_ci([r["dice"] for r in groups[(panel, m, n)]]) for n in budgets])
            xs = [n * 1.05 ** (k - (len(present) - 1) / 2) for n in budgets]
            style = {"ls": "--"} if m == "unet_scratch" else {}
            ax.plot(xs, stats[:, 0], marker="o", color=colors[m], label=method_label(m, students.get(panel, '')), lw=2 if m == "ts_kd" else 1.3, **style)
            errors = np.nan_to_num(np.abs(stats[:, 1:].T - stats[:, 0]))  # no bar where there is no interval
            ax.errorbar(xs, stats[:, 0], yerr=errors, fmt="none", ecolor=colors[m], capsize=3, lw=1.2)
        teacher = sorted({(int(r["num_labeled"]), r["teacher_dice"]) for r in teacher_rows if panel_name(r) == panel})
        if teacher:
            by_n = defaultdict(list)
            for n, d in teacher:
                by_n[n].append(d)
            ax.plot(sorted(by_n), [statistics.mean(by_n[n]) for n in sorted(by_n)], "k:", marker="x", label="teacher (LoRA-SAM)")
        ax.set_title(panel)
        ax.set_xlabel("labeled training images")
        ax.set_ylabel("test Dice (mean, 95% CI)")
        ax.set_xscale("log")
        ax.set_xticks(sorted({n for p, _, n in groups if p == panel}), labels=[str(n) for n in sorted({n for p, _, n in groups if p == panel})])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the data, never over it
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_transfer_size(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """The transfer-size study: per dataset (columns) and method, test Dice against the transfer set's size (mean,
    95% CI over seeds; top) and each size's paired difference from the reference variant, real images only (bottom).
    ``None`` unless the rows hold one dataset's cells at two or more transfer-set sizes."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("transfer_images")]
    sizes = defaultdict(set)
    for r in ok:
        sizes[r["dataset"]].add(int(r["transfer_images"]))
    datasets = sorted(d for d, s in sizes.items() if len(s) > 1)
    if not datasets:
        return None
    size_of = {(r["dataset"], r.get("variant", "")): int(r["transfer_images"]) for r in ok}
    diffs, students = variant_differences(ok), panel_students(ok)
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.4 * len(datasets), 6.0), squeeze=False, sharex="col")
    for col, dataset in enumerate(datasets):
        top, bottom = axes[0][col], axes[1][col]
        for method in [m for m in METHODS if any(r["method"] == m and r["dataset"] == dataset for r in ok)]:
            by_size = defaultdict(list)
            for r in ok:
                if r["dataset"] == dataset and r["method"] == method:
                    by_size[int(r["transfer_images"])].append(r["dice"])
            xs = sorted(by_size)
            stats = np.array([mean_ci(by_size[x]) for x in xs])
            top.errorbar(xs, stats[:, 0], yerr=np.nan_to_num(np.abs(stats[:, 1:].T - stats[:, 0])), marker="o", capsize=3,
                         label=method_label(method, students.get(dataset, "")))
            mine = sorted(((size_of[(dataset, d["variant"])], d) for d in diffs if d["dataset"] == dataset and d["method"] == method),
                          key=lambda x: x[0])
            if mine:
                xs_d = [x for x, _ in mine]
                means = np.array([d["mean_diff"] for _, d in mine])
                errors = np.nan_to_num(np.abs(np.array([[d["ci_low"], d["ci_high"]] for _, d in mine]).T - means))
                bottom.errorbar(xs_d, means, yerr=errors, marker="o", capsize=3)
        top.set_title(dataset)
        top.set_ylabel("test Dice (mean, 95% CI)")
        top.legend(fontsize=7)
        bottom.axhline(0.0, color="k", lw=0.8, ls=":")
        bottom.set_ylabel("Dice − real images only (paired, 95% CI)")
        bottom.set_xlabel("transfer-set images (real + synthetic)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _mask_name(item: dict[str, Any]) -> str:
    return Path(str(item["image"])).name.split(".")[0] + (f"_z{int(item['slice']):03d}" if "slice" in item else "")


def plot_qualitative(rows: Sequence[dict[str, Any]], path: str | Path, num_images: int = 3) -> Path | None:
    """Figure 4: for each dataset, ``num_images`` test images with ground truth and each method's mask (largest
    label budget, lowest seed). Returns ``None`` when no saved masks exist."""
    finished = [r for r in rows if r.get("status") == "ok" and r.get("masks_dir")]
    panels, students = sorted({panel_name(r) for r in finished}), panel_students(rows)
    blocks = []  # (panel, item, [(title, mask path)])
    for panel in panels:
        mine = [r for r in finished if panel_name(r) == panel]
        budget = max(int(r["num_labeled"]) for r in mine)
        chosen = {}
        for r in sorted(mine, key=lambda r: r["seed"]):
            if int(r["num_labeled"]) == budget:
                chosen.setdefault(r["method"], r)
        methods = [m for m in METHODS if m in chosen]
        items = load_datalist(chosen[methods[0]]["dataset_dir"], "test", validate=False)
        items = [it for it in sorted(items, key=_mask_name)
                 if all((Path(chosen[m]["masks_dir"]) / f"{_mask_name(it)}_mask.png").is_file() for m in methods)][:num_images]
        for it in items:
            blocks.append((f"{panel}, {budget} labels", it, [(method_label(m, students.get(panel, '')), Path(chosen[m]["masks_dir"]) / f"{_mask_name(it)}_mask.png")
                                                           for m in methods]))
    if not blocks:
        return None
    cols = 2 + max(len(b[2]) for b in blocks)
    fig, axes = plt.subplots(len(blocks), cols, figsize=(1.9 * cols, 2.0 * len(blocks)), squeeze=False)
    load = LoadSliceOrImaged(("image", "label"))
    for row_axes, (title, item, masks) in zip(axes, blocks):
        data = load({k: v for k, v in item.items() if k in ("image", "label", "slice")})
        image = to_display(data["image"].numpy()).transpose(1, 0, 2)  # MONAI's PIL reader gives (W, H)
        label = data["label"].numpy()[0].T.astype(np.int64)
        panels = [("image", image), ("ground truth", overlay(image, label))]
        panels += [(name, overlay(image, np.asarray(Image.open(p)))) for name, p in masks]
        for ax, (name, img) in zip(row_axes, panels):
            ax.imshow(img)
            ax.set_title(name, fontsize=7)
        row_axes[0].set_ylabel(title, fontsize=7)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(run_dir: str | Path, command: str = "", earlier_csv: str | Path | None = None) -> Path:
    """Write ``results.csv``, ``report.md``, ``dice_vs_labels.png`` (Figure 3), ``qualitative.png`` (Figure 4) and
    ``efficiency.md`` into ``run_dir`` from every finished cell there (and those of ``earlier_csv`` it lacks, see
    :func:`merge_earlier`); print the Dice table; return report.md."""
    run_dir = Path(run_dir)
    rows = collect_results(run_dir)
    if not rows:
        raise FileNotFoundError(f"no result.json under {run_dir}; run `tskd experiment --run-dir {run_dir} ...` first")
    local, merged_line = rows, ""
    if earlier_csv:
        rows, merged_line = merge_earlier(rows, earlier_csv)
    rows, stopping_notes = reconcile_stopping(rows)
    write_csv(rows, run_dir / "results.csv")
    teacher_rows = [r for r in rows if r.get("teacher_dice") is not None]
    figure3 = plot_dice_vs_labels(rows, run_dir / "dice_vs_labels.png", teacher_rows)
    figure4 = plot_qualitative(rows, run_dir / "qualitative.png")
    figure5 = plot_transfer_size(rows, run_dir / "transfer_size.png")
    summary = summary_markdown(rows)
    teachers = sorted({r["teacher"] for r in rows if r.get("teacher")})
    lines = [f"# TSKD experiment report: {run_dir.name}", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    lines += ["Test-split metrics of the fine-tuned student, mean ± std over seeds; HD95 and NSD in pixels of each image's "
              "original size (predictions resized back to it; NSD tolerance 2 px). A class of the ground truth that the "
              "prediction misses (or the reverse) scores the image diagonal as HD95; `empty_predictions` in results.csv "
              "counts the missed ones. `train_seconds` = fine-tuning + test evaluation wall time.", ""]
    lines += ["Teachers: " + "; ".join(teachers), ""] if teachers else []
    lines += [f"Earlier results: {merged_line}", ""] if merged_line else []
    lines += [f"Stopping rules: {note}.", ""] if (note := "; ".join(stopping_notes)) else []
    lines += [summary, per_class_markdown(rows), empty_predictions_line(rows), ""]
    paired = paired_markdown(rows)
    lines += ["## Paired differences (95% CI over seeds; 'better' / 'worse' only where the CI excludes 0)", "", paired] if paired else []
    variants = variants_markdown(rows)
    lines += ["## Variants against the reference variant (95% CI over seeds)", "", variants] if variants else []
    lines += [f"![Dice vs labels]({figure3.name})", ""]
    lines += [f"![Qualitative]({figure4.name})", ""] if figure4 else []
    lines += [f"![Transfer-set size]({figure5.name})", ""] if figure5 else []
    first = next((r for r in local if r.get("status") == "ok"), None)
    if first is not None:
        num_classes = read_dataset_info(first["dataset_dir"]).num_classes
        students = sorted(set(panel_students(rows).values()))
        eff = efficiency_markdown(efficiency_rows(int(first["image_size"]), num_classes, SCALES[first["scale"]].sam_variant, students),
                                  stage_seconds(run_dir))
        (run_dir / "efficiency.md").write_text(eff)
        lines += ["## Efficiency (this machine, CPU)", "", eff]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print(summary)
    print(f"report: {report}\nfigures: " + ", ".join(str(f) for f in (figure3, figure4, figure5) if f))
    return report
