"""Small-scale TS-KD study on CPU: does TS-KD pre-training beat training the student from scratch?

    python benchmarks/kd_small_scale.py --dataset-dir ../shared/data/hc18 --run-dir runs/kd_small_hc18

Chains the bundles through ``monai.bundle.run``: LoRA-SAM teacher (the ``small`` SAM architecture, random init,
encoder trained too, since no SAM weights exist on these machines) -> teacher cache on the transfer set (the
train split's images) -> TS-KD pre-training of the ViT-Tiny student -> fine-tuning with ``--num-labeled`` labels
for each seed, from scratch and from the TS-KD weights -> test-split evaluation. A stage whose output exists is
skipped, so an interrupted study resumes. Writes ``results.csv``, ``summary.md`` and ``dice.png`` to the run dir.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

from monai.bundle import run

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


def bundle(name: str, *configs: str, **overrides) -> None:
    folder = BUNDLES / name / "configs"
    files = [str(folder / c) for c in configs]
    run(config_file=files if len(files) > 1 else files[0], meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"), **overrides)


def stage(done: Path, label: str, fn, timings: dict) -> None:
    """Run ``fn`` unless ``done`` exists; record its wall time."""
    if done.exists():
        print(f"[skip] {label}: {done} exists")
        return
    start = time.perf_counter()
    fn()
    timings[label] = round(time.perf_counter() - start, 1)
    print(f"[done] {label} in {timings[label]} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-labeled", type=int, default=20)
    parser.add_argument("--teacher-labels", type=int, default=0, help="labels for the teacher (0 = whole train split)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-epochs", type=int, default=60)
    parser.add_argument("--distill-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=100)
    args = parser.parse_args()

    out = Path(args.run_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.dataset_dir).resolve())
    name = Path(data).name
    timings: dict[str, float] = {}
    common = {"dataset_dir": data, "image_size": args.image_size}
    teacher = {"sam_variant": "small", "random_init": True, "train_encoder": True, "batch_size": 8, "num_labeled": args.teacher_labels}
    t_root = out / "teacher"
    merged = t_root / "models" / "teacher_merged.safetensors"
    stage(merged, "teacher train", lambda: bundle("tskd_sam_lora", "train.json", bundle_root=str(t_root), max_epochs=args.teacher_epochs,
                                                  seed=0, **common, **teacher), timings)
    t_eval = t_root / "eval_test" / "metrics.json"
    stage(t_eval, "teacher evaluate", lambda: bundle("tskd_sam_lora", "train.json", "evaluate.json", bundle_root=str(t_root),
                                                     metrics_dir=str(t_eval.parent), seed=0, **common, **teacher), timings)
    cache = out / "cache"
    stage(cache / "index.json", "teacher cache", lambda: bundle("tskd_sam_lora", "train.json", "cache.json", bundle_root=str(t_root),
                                                               cache_dir=str(cache), transfer_dir=data, seed=0, **common, **teacher), timings)
    d_root = out / "distill"
    pretrained = d_root / "runs" / f"{name}_ts_kd_s0" / "student_pretrained.safetensors"
    stage(pretrained, "TS-KD pre-training", lambda: bundle("tskd_distill", "train.json", bundle_root=str(d_root), cache_dir=str(cache),
                                                            teacher_weights=str(merged), sam_variant="small", random_init=True,
                                                            max_epochs=args.distill_epochs, seed=0, **common), timings)
    rows = []
    for seed in args.seeds:
        for method, weights in (("scratch", ""), ("ts_kd", str(pretrained))):
            root = out / f"student_{method}_s{seed}"
            student = {"num_labeled": args.num_labeled, "seed": seed, "initial_weights": weights, "output_dir": str(root / "run")}
            stage(root / "models" / "model.pt", f"fine-tune {method} seed {seed}",
                  lambda: bundle("tskd_student_segmentation", "train.json", bundle_root=str(root), max_epochs=args.finetune_epochs, **common, **student), timings)
            metrics = root / "run" / "eval_test" / "metrics.json"
            stage(metrics, f"evaluate {method} seed {seed}",
                  lambda: bundle("tskd_student_segmentation", "train.json", "evaluate.json", bundle_root=str(root), **common, **student), timings)
            m = json.loads(metrics.read_text())["metrics"]
            rows.append({"dataset": name, "method": method, "seed": seed, "num_labeled": args.num_labeled,
                         "dice": m["mean_dice"]["mean"], "hd95": m["hd95"]["mean"], "nsd": m["nsd"]["mean"]})
    write_report(out, rows, json.loads(t_eval.read_text())["metrics"], args, timings)


def write_report(out: Path, rows: list[dict], teacher_metrics: dict, args: argparse.Namespace, timings: dict) -> None:
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# TS-KD vs scratch, {rows[0]['dataset']}, {args.num_labeled} labels, {len(args.seeds)} seeds, {args.image_size} px",
             "", f"Teacher: SAM `small` architecture, random init (no SAM weights), trained on "
             f"{args.teacher_labels or 'all'} train labels for {args.teacher_epochs} epochs; test Dice "
             f"{teacher_metrics['mean_dice']['mean']:.3f}.", "", "| method | Dice | HD95 (px) | NSD |", "|---|---|---|---|"]
    summary = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        vals = {k: [r[k] for r in rows if r["method"] == method and r[k] is not None] for k in ("dice", "hd95", "nsd")}
        summary[method] = {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in vals.items() if v}
        lines.append(f"| {method} | " + " | ".join(f"{summary[method][k][0]:.3f} ± {summary[method][k][1]:.3f}" for k in ("dice", "hd95", "nsd") if k in summary[method]) + " |")
    lines += ["", "Stage seconds (this run): " + ", ".join(f"{k}: {v}" for k, v in timings.items())]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.2))
    methods = list(summary)
    for i, method in enumerate(methods):
        dice = [r["dice"] for r in rows if r["method"] == method]
        ax.bar(i, summary[method]["dice"][0], yerr=summary[method]["dice"][1], capsize=4, alpha=0.7)
        ax.scatter([i] * len(dice), dice, color="k", s=12, zorder=3)
    ax.axhline(teacher_metrics["mean_dice"]["mean"], ls="--", color="gray", label="teacher")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("test Dice")
    ax.set_title(f"{rows[0]['dataset']}, {args.num_labeled} labels")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "dice.png", dpi=120)


if __name__ == "__main__":
    main()
