"""Report figures and CSV from result rows; stage times."""

import json

import pytest
from PIL import Image

from tskd_components.pipeline.efficiency import stage_seconds
from tskd_components.pipeline.report import merge_earlier, plot_dice_vs_labels, plot_transfer_size, write_csv


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


def test_figure3_and_csv(tmp_path):
    png = plot_dice_vs_labels(rows(), tmp_path / "f3.png", [{"dataset": "hc18", "num_labeled": 10, "teacher_dice": 0.8}])
    with Image.open(png) as im:
        assert im.size[0] > 400
    lines = write_csv(rows(), tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("dataset,variant,method,student,num_labeled,seed,status,dice,hd95,nsd,empty_predictions,pretrain_steps,steps,stopping,train_seconds") and len(lines) == 14
    with pytest.raises(ValueError, match="no finished result rows"):
        plot_dice_vs_labels(rows()[-1:], tmp_path / "empty.png")


def test_stage_seconds_group_by_kind(tmp_path):
    records = (("teacher", 10.0, 9.0), ("teacher", 20.0, None), ("fine-tune ts_kd", 5.0, 4.0))  # an older record lacks CPU time
    for i, (kind, s, cpu) in enumerate(records):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "stage.json").write_text(json.dumps({"kind": kind, "seconds": s, **({"cpu_seconds": cpu} if cpu else {})}))
    assert stage_seconds(tmp_path) == [{"stage": "fine-tune ts_kd", "runs": 1, "mean_s": 5.0, "total_s": 5.0, "cpu_runs": 1, "cpu_mean_s": 4.0},
                                       {"stage": "teacher", "runs": 2, "mean_s": 15.0, "total_s": 30.0, "cpu_runs": 1, "cpu_mean_s": 9.0}]


def test_transfer_size_figure_only_for_a_study(tmp_path):
    assert plot_transfer_size(rows(), tmp_path / "none.png") is None  # no transfer-set sizes: not a study
    study = []
    for variant, size, gain in (("real_only", 140, 0.0), ("synthetic_00280", 280, 0.01), ("synthetic_00700", 700, 0.03)):
        for seed in range(3):
            study.append({"dataset": "hc18", "variant": variant, "method": "ts_kd", "num_labeled": 10, "seed": seed, "status": "ok",
                          "dice": 0.8 + 0.01 * seed + gain, "transfer_images": size})
    png = plot_transfer_size(study, tmp_path / "t.png")
    with Image.open(png) as im:
        assert im.size[0] > 300 and im.size[1] > 500  # two rows: Dice, and the paired difference from real-only
    assert plot_transfer_size([r for r in study if r["variant"] == "real_only"], tmp_path / "one.png") is None


def test_earlier_results_fill_the_cells_a_run_folder_lacks(tmp_path):
    old, new = "SAM standin [sha256 8c877fe2eb17]", "SAM standin [sha256 ef215f12a162]"
    earlier = [{**r, "teacher": f"{old}, LoRA r4" if r["method"] == "ts_kd" else "", "dice_per_class": {"RV": 0.5, "LV": 0.6}} for r in rows()]
    earlier.append({"dataset": "hc18", "method": "ta_kd", "num_labeled": 40, "seed": 2, "status": "ok", "dice": 0.7, "teacher": f"{old}, frozen"})
    write_csv(earlier, tmp_path / "earlier.csv")
    here = [{**r, "dice": r["dice"] + 0.001} for r in earlier if r["seed"] == 2 and r["num_labeled"] == 40 and r["method"] != "ta_kd"]  # re-run
    merged, line = merge_earlier(here, tmp_path / "earlier.csv")
    assert len(merged) == len(earlier)
    kept = [r for r in merged if r["seed"] == 2 and r["num_labeled"] == 40 and r["method"] != "ta_kd"]
    assert kept == here and all("source" not in r for r in kept)  # the run folder's cells win over the earlier ones
    added = [r for r in merged if r.get("source")]
    assert len(added) == len(earlier) - 2 and all(isinstance(r["seed"], int) and isinstance(r["dice"], float) for r in added if r["status"] == "ok")
    assert added[0]["dice_per_class"] == {"RV": 0.5, "LV": 0.6}  # written as JSON, read back as a dict
    assert line.startswith(f"{len(added)} cells from ") and "2 cells re-run" in line and "0.001" in line
    # a seed moved whole to a re-trained stand-in pools; moved in part it would pair TS-KD of one with TA-KD of the other
    moved = [{**r, "teacher": r["teacher"].replace(old, new)} for r in here]
    with pytest.raises(ValueError, match="hc18 n40 seed 2 would pair cells of different teachers"):
        merge_earlier(moved, tmp_path / "earlier.csv")
    ta_kd = {**earlier[-1], "teacher": f"{new}, frozen"}
    assert len(merge_earlier([*moved, ta_kd], tmp_path / "earlier.csv")[0]) == len(earlier)
    with pytest.raises(ValueError, match="other settings"):  # another LoRA rank is another method
        merge_earlier([{**r, "teacher": r["teacher"].replace("r4", "r16")} for r in here], tmp_path / "earlier.csv")
