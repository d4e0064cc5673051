"""Markdown tables of result rows: mean ± std, steps, paired CIs, Dice per class, empty predictions, student names."""

import json
import statistics

from tskd_components.pipeline.tables import empty_predictions_line, method_label, paired_markdown, per_class_markdown, summary_markdown
from tests.pipeline.test_report import rows

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
    # TS-KD is 0.1 above scratch at every seed: CI [0.1, 0.1]; HD95 is the same for both: no difference shown.
    # Scratch trains fewer steps than TS-KD, so the CI is stated without "better"; at matched steps it is "better"
    assert "| hc18 | 10 | ViT-Tiny scratch | 3 | +0.100 [+0.100, +0.100] | CI excludes 0; compute not matched (fewer steps) |" in text
    assert "| hc18 | 40 | ViT-Tiny scratch | 3 | +0.000 [+0.000, +0.000] | no difference shown |" in text
    matched = paired_markdown([{**r, "method": "scratch_matched"} if r["method"] == "scratch" else r for r in rows()])
    assert "| hc18 | 10 | ViT-Tiny scratch, matched steps | 3 | +0.100 [+0.100, +0.100] | better |" in matched
    assert "MAE (ImageNet)" not in text  # not-run cells are not compared


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
    # a row read back from a results.csv carries its scores itself (its run folder may be gone)
    from_csv = [{k: v for k, v in c.items() if k != "masks_dir"} | {"dice_per_class": s} for c, s in zip(cells[:2], ({"RV": 0.5, "LV": 0.9}, {"RV": 0.7, "LV": None}))]
    assert "| TS-KD | 0.600 ± 0.141 | 0.900 ± 0.000 |" in per_class_markdown(from_csv)


def test_random_init_rows_name_their_student():
    cells = [{**r, "variant": "tinyvit", "student": "tiny_vit_5m + light"} for r in rows() if r["method"] != "mae_imagenet"]
    cells += [{**r, "method": "unet_scratch", "variant": "tinyvit", "student": "BasicUNet"} for r in rows() if r["method"] == "scratch"]
    text = summary_markdown(cells)
    assert "| TinyViT-5M scratch | 0 + 110 | 0 + 110 |" in text and "ViT-Tiny" not in text
    assert "| UNet scratch (reference) |" in text  # the UNet reference is not the panel's student
    assert "| hc18 [tinyvit] | 10 | TinyViT-5M scratch | 3 |" in paired_markdown(cells)
    # rows written before results named their student: the then default, ViT-Tiny
    assert method_label("scratch_matched", "") == "ViT-Tiny scratch, matched steps"
    assert method_label("ts_kd", "tiny_vit_5m + light") == "TS-KD"
