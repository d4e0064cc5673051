"""Report tables and figures from result rows; efficiency figures of the real model classes."""

import json
import statistics

import pytest
from PIL import Image

from tskd_components.pipeline.efficiency import stage_seconds
from tskd_components.pipeline.report import (empty_predictions_line, paired_markdown, per_class_markdown, plot_dice_vs_labels, summary_markdown,
                                             write_csv)


def rows():
    out = []
    for method, base in (("scratch", 0.6), ("ts_kd", 0.7)):
        for n in (10, 40):
            for seed, noise in enumerate((0.0, 0.02, 0.04)):
                out.append({"dataset": "hc18", "method": method, "num_labeled": n, "seed": seed, "status": "ok",
                            "dice": base + n / 400 + noise, "hd95": 10.0 - seed, "nsd": 0.5,
                            "steps": 100 + 10 * seed, "pretrain_steps": 50 if method == "ts_kd" else 0})
    out.append({"dataset": "hc18", "method": "mae_imagenet", "num_labeled": 10, "seed": 0, "status": "not run: no weights"})
    return out


def test_summary_is_mean_and_sample_std_over_seeds():
    text = summary_markdown(rows())
    ten, forty = [0.725, 0.745, 0.765], [0.8, 0.82, 0.84]
    cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f} (n=3)" for v in (ten, forty)]
    assert f"| TS-KD | {cells[0]} | {cells[1]} |" in text and cells == ["0.745 ± 0.020 (n=3)", "0.820 ± 0.020 (n=3)"]
    assert "### hc18: HD95 (px) (lower is better)" in text
    assert "- hc18 / MAE (ImageNet): not run: no weights" in text
    assert "| TS-KD | 50 + 110 | 50 + 110 |" in text and "| ViT-Tiny scratch | 0 + 110 | 0 + 110 |" in text  # steps table


def test_paired_table_gives_the_difference_its_ci_and_a_verdict():
    text = paired_markdown(rows())
    # TS-KD is 0.1 above scratch at every seed: CI [0.1, 0.1]; HD95 is the same for both: no difference shown
    assert "| hc18 | 10 | ViT-Tiny scratch | 3 | +0.100 [+0.100, +0.100] | better |" in text
    assert "| hc18 | 40 | ViT-Tiny scratch | 3 | +0.000 [+0.000, +0.000] | no difference shown |" in text
    assert "MAE (ImageNet)" not in text  # not-run cells are not compared


def test_figure3_and_csv(tmp_path):
    png = plot_dice_vs_labels(rows(), tmp_path / "f3.png", [{"dataset": "hc18", "num_labeled": 10, "teacher_dice": 0.8}])
    with Image.open(png) as im:
        assert im.size[0] > 400
    lines = write_csv(rows(), tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("dataset,variant,method,student,num_labeled,seed,status,dice,hd95,nsd,empty_predictions,pretrain_steps,steps,train_seconds") and len(lines) == 14
    with pytest.raises(ValueError, match="no finished result rows"):
        plot_dice_vs_labels(rows()[-1:], tmp_path / "empty.png")


def test_stage_seconds_group_by_kind(tmp_path):
    records = (("teacher", 10.0, 9.0), ("teacher", 20.0, None), ("fine-tune ts_kd", 5.0, 4.0))  # an older record lacks CPU time
    for i, (kind, s, cpu) in enumerate(records):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "stage.json").write_text(json.dumps({"kind": kind, "seconds": s, **({"cpu_seconds": cpu} if cpu else {})}))
    assert stage_seconds(tmp_path) == [{"stage": "fine-tune ts_kd", "runs": 1, "mean_s": 5.0, "total_s": 5.0, "cpu_runs": 1, "cpu_mean_s": 4.0},
                                       {"stage": "teacher", "runs": 2, "mean_s": 15.0, "total_s": 30.0, "cpu_runs": 1, "cpu_mean_s": 9.0}]


def test_empty_predictions_are_counted_per_cell():
    cells = rows()
    assert empty_predictions_line(cells) == "Empty predictions (a ground-truth class not predicted at all), over all cells: 0."
    cells[0]["empty_predictions"], cells[1]["empty_predictions"] = 2, "1"  # scratch n10, seeds 0 and 1 (CSV gives text)
    cells[6]["empty_predictions"] = 1  # TS-KD n10 seed 0
    assert empty_predictions_line(cells) == ("Empty predictions (a ground-truth class not predicted at all), over all cells: 4 "
                                             "(hc18 TS-KD n10: 1, hc18 ViT-Tiny scratch n10: 3).")


def test_per_class_dice_of_a_multi_class_dataset(tmp_path):
    cells = []
    for dataset, per_seed in (("acdc", ({"RV": 0.5, "LV": 0.9}, {"RV": 0.7, "LV": None})), ("hc18", ({"head": 0.8}, {"head": 0.9}))):
        for seed, scores in enumerate(per_seed):
            cell = tmp_path / dataset / str(seed)
            (cell / "overlays").mkdir(parents=True)
            (cell / "metrics.json").write_text(json.dumps({"metrics": {"mean_dice": {"mean": 0.0, "per_class": scores}}}))
            cells.append({"dataset": dataset, "method": "ts_kd", "num_labeled": 10, "seed": seed, "status": "ok", "masks_dir": str(cell / "overlays")})
    text = per_class_markdown(cells)
    # RV: mean 0.6, sample std 0.141; LV: one seed had no LV anywhere (None): 0.9 ± 0
    assert "| method | RV | LV |" in text and "| TS-KD | 0.600 ± 0.141 | 0.900 ± 0.000 |" in text
    assert "hc18" not in text  # one foreground class: the summary table already says it
    assert per_class_markdown(cells[2:]) == ""
