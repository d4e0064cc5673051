"""End to end: a minimal experiment (HC18 sample, one seed, scratch vs TS-KD, tiny models) and its resume."""

import csv
import json
import math
import re
import shutil

import pytest
from PIL import Image

from tskd_components.pipeline import SCALES, Experiment, ExperimentSpec, stages
from tskd_components.pipeline.cli import main as tskd
from tskd_components.pipeline.experiment import epochs_for, step_budget


def test_epochs_follow_the_label_budget():
    assert epochs_for(100, 10, 8) == 50  # 2 iterations per epoch
    assert epochs_for(100, 40, 8) == 20
    assert epochs_for(3, 140, 8) == 1


def test_unknown_method_and_missing_sam_checkpoint_are_refused(sample_dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["byol"])
    with pytest.raises(FileNotFoundError, match="--sam-checkpoint"):
        ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="paper")


def test_minimal_experiment_runs_reports_and_resumes(sample_dataset, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "exp"
    args = ["experiment", "--datasets", str(sample_dataset), "--num-labeled", "4", "--methods", "scratch", "scratch_matched", "ts_kd", "mae_imagenet",
            "--seeds", "0", "--scale", "tiny", "--run-dir", str(run_dir)]

    # interrupt the run when it reaches the distillation stage (after the cache is built)
    real_run_bundle = stages.run_bundle

    def interrupted(name, configs, **overrides):
        if name == "tskd_distill" and "build_cache.json" not in configs:
            raise KeyboardInterrupt
        real_run_bundle(name, configs, **overrides)

    monkeypatch.setattr(stages, "run_bundle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tskd(args)
    scratch_model = run_dir / "hc18" / "finetune" / "scratch_n4_s0" / "models" / "model.pt"
    first_mtime = scratch_model.stat().st_mtime_ns
    capsys.readouterr()

    monkeypatch.setattr(stages, "run_bundle", real_run_bundle)
    assert tskd(args) == 0
    log = capsys.readouterr().out
    # finished stages are skipped, the interrupted one and the rest run
    assert "[skip] fine-tune hc18 scratch n4 s0" in log and "[skip] teacher hc18 n4 s0" in log and "[skip] ts_kd cache hc18" in log
    assert "[run ] ts_kd distillation hc18" in log and "[run ] fine-tune hc18 ts_kd n4 s0" in log
    assert scratch_model.stat().st_mtime_ns == first_mtime

    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["status"][:3]) for r in rows] == [("scratch", "ok"), ("scratch_matched", "ok"), ("mae_imagenet", "not"), ("ts_kd", "ok")]
    scratch, matched, _, ts_kd = rows
    for r in (scratch, matched, ts_kd):
        cell = run_dir / "hc18" / "finetune" / f"{r['method']}_n4_s0"
        metrics = json.loads((cell / "run" / "eval_test" / "metrics.json").read_text())["metrics"]
        assert float(r["dice"]) == pytest.approx(metrics["mean_dice"]["mean"]) and float(r["train_seconds"]) > 0
        assert json.loads(open(r["labeled_ids"]).read())["ids"] == json.loads(open(scratch["labeled_ids"]).read())["ids"]
    # matched control: as many optimizer steps as TS-KD's distillation + fine-tuning (whole epochs of 1 step at 4 labels)
    assert int(ts_kd["pretrain_steps"]) > 0 and int(matched["pretrain_steps"]) == 0
    assert int(matched["steps"]) == int(ts_kd["pretrain_steps"]) + int(ts_kd["steps"]) > int(scratch["steps"])
    assert (scratch["stopping"], matched["stopping"]) == ("fixed 4 steps", f"fixed {matched['steps']} steps")  # the tiny scale has no patience
    assert "random init" in ts_kd["teacher"] and ts_kd["teacher_dice"] != ""
    assert ts_kd["initial_weights"].endswith("student_pretrained.safetensors")
    report = (run_dir / "report.md").read_text()
    assert "| ViT-Tiny scratch | " in report and "| TS-KD | " in report and "(n=1)" in report
    assert "MAE (ImageNet): not run: no ImageNet MAE" in report and "tskd experiment --datasets" in report
    for png in ("dice_vs_labels.png", "qualitative.png"):
        with Image.open(run_dir / png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert "| vit_tiny + light student (64 px) | 5.6" in (run_dir / "efficiency.md").read_text()

    # a third run changes nothing
    tskd(args)
    assert "[run ]" not in capsys.readouterr().out


def test_pipeline_with_synthetic_images(sample_dataset, tmp_path, capsys):
    run_dir = tmp_path / "pipe"
    assert tskd(["pipeline", "--scale", "tiny", "--num-labeled", "4", "--synthetic", "3", "--run-dir", str(run_dir)]) == 0
    manifest = json.loads((run_dir / "hc18" / "transfer" / "set_27" / "transfer_set" / "manifest.json").read_text())
    assert manifest["num_real"] == 24 and manifest["num_synthetic"] == 3
    log = capsys.readouterr().out
    assert "[done] synthesis hc18" in log and "[done] ts_kd distillation hc18" in log
    assert (run_dir / "dice_vs_labels.png").is_file() and "TS-KD" in (run_dir / "report.md").read_text()


def test_study_runs_one_variant_per_value(sample_dataset, tmp_path):
    from tskd_components.pipeline.cli import build_parser, study_specs

    args = build_parser().parse_args(["study", "lora-rank", "--values", "1", "16", "--datasets", str(sample_dataset),
                                      "--run-dir", str(tmp_path), "--scale", "tiny"])
    specs = study_specs(args, [sample_dataset])
    assert [(s.variant, s.params.lora_rank, s.methods) for s in specs] == [("lora_rank_01", 1, ["ts_kd"]), ("lora_rank_16", 16, ["ts_kd"])]
    assert Experiment(specs[1])._ds_root(sample_dataset).name == "hc18_lora_rank_16"
    assert Experiment(specs[1])._shared_root(sample_dataset).name == "hc18"  # teachers and synthesis are shared
    args = build_parser().parse_args(["study", "synthetic", "--values", "48", "--datasets", str(sample_dataset), "--run-dir", str(tmp_path)])
    assert [(s.variant, s.transfer_size) for s in study_specs(args, [sample_dataset])] == [("real_only", 0), ("synthetic_00048", 48)]


def test_budgets_and_checkpoints_are_checked_before_any_stage(sample_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"label budgets must be at least 1, got \[0\]"):
        ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[0])
    with pytest.raises(FileNotFoundError, match="--sam-checkpoint .*nope.pth does not exist"):
        ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], scale="standin", sam_checkpoint=str(tmp_path / "nope.pth"))


def test_every_seed_re_runs_the_baselines_pre_training(sample_dataset, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(stages.Stage, "run", lambda self: ran.append((self.task, self.folder.name, self.overrides["seed"])))
    exp = Experiment(ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["mae", "ta_kd"], scale="tiny"))
    for seed in (0, 1):
        for method in ("mae", "ta_kd"):
            exp.initial_weights(sample_dataset, method, 4, seed)
    assert ("mae", "mae_s0", 0) in ran and ("mae", "mae_s1", 1) in ran
    assert ("ta_kd", "ta_kd_s0", 0) in ran and ("ta_kd", "ta_kd_s1", 1) in ran and ("ta_kd_cache", "cache_stage", 1) in ran


@pytest.fixture
def staged(monkeypatch) -> list:
    """Stages are recorded instead of run; each writes stand-ins for its outputs (what the next stage reads)."""
    ran = []

    def record(self):
        ran.append(self)
        for out in self.outputs:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"metrics": {k: {"mean": 0.5, "total": 0} for k in ("mean_dice", "hd95", "nsd", "empty_predictions")}}))

    monkeypatch.setattr(stages.Stage, "run", record)
    monkeypatch.setattr(stages.Stage, "record", lambda self: {"seconds": 1.0})
    return ran


def test_teacher_and_fine_tune_stages_list_the_dataset_and_the_sam_checkpoint(sample_dataset, tmp_path, staged):
    checkpoint = tmp_path / "sam.pth"
    checkpoint.write_bytes(b"sam")
    exp = Experiment(ExperimentSpec(run_dir=tmp_path / "r", datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny",
                                    sam_checkpoint=str(checkpoint)))
    exp.finetune(sample_dataset, "ts_kd", 4, 0)
    inputs = {s.task: s.inputs for s in staged}
    assert sample_dataset in inputs["teacher"] and checkpoint in inputs["teacher"]
    assert sample_dataset in inputs["finetune"]


def test_a_student_variant_reaches_the_student_stages_only(sample_dataset, tmp_path, staged):
    with pytest.raises(ValueError, match="unknown student 'vit_huge'"):
        ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], scale="tiny", student_name="vit_huge")
    spec = dict(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny")
    Experiment(ExperimentSpec(**spec)).finetune(sample_dataset, "ts_kd", 4, 0)
    # the bundles' default student (ViT-Tiny + light) reaches the student stages, not the teacher
    assert {s.task: s.overrides.get("decoder") for s in staged} == {"teacher": None, "ts_kd_cache": "light", "ts_kd": "light", "finetune": "light"}
    staged.clear()
    unetr = Experiment(ExperimentSpec(**spec, decoder="unetr", variant="unetr"))
    unetr.finetune(sample_dataset, "ts_kd", 4, 0)
    assert {s.task: s.overrides.get("decoder") for s in staged} == {"teacher": None, "ts_kd_cache": "unetr", "ts_kd": "unetr", "finetune": "unetr"}
    assert unetr._ds_root(sample_dataset).name == "hc18_unetr"


def test_an_image_size_reaches_every_stage_and_the_result(sample_dataset, tmp_path, staged):
    spec = dict(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny", image_size=96)
    row = Experiment(ExperimentSpec(**spec)).finetune(sample_dataset, "ts_kd", 4, 0)
    assert {s.task: s.overrides["image_size"] for s in staged} == {"teacher": 96, "ts_kd_cache": 96, "ts_kd": 96, "finetune": 96}
    assert row["image_size"] == 96 and ExperimentSpec(**spec | {"image_size": None}).params.image_size == 64


def test_loader_workers_reach_every_stage_and_the_default_keeps_signatures(sample_dataset, tmp_path, staged):
    spec = dict(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny")
    Experiment(ExperimentSpec(**spec)).finetune(sample_dataset, "ts_kd", 4, 0)
    assert staged and all("num_workers" not in s.overrides for s in staged)
    staged.clear()
    Experiment(ExperimentSpec(**spec, num_workers=3)).finetune(sample_dataset, "ts_kd", 4, 0)
    assert {s.task: s.overrides["num_workers"] for s in staged} == {"teacher": 3, "ts_kd_cache": 3, "ts_kd": 3, "finetune": 3}


def test_a_changed_bundle_default_student_changes_the_stage_signatures(sample_dataset, tmp_path, monkeypatch, staged):
    copy = tmp_path / "bundles"
    for configs in stages.bundles_dir().glob("*/configs"):
        shutil.copytree(configs, copy / configs.parent.name / "configs")
    monkeypatch.setenv("TSKD_BUNDLES_DIR", str(copy))
    monkeypatch.setattr(stages, "_pinned", [])
    train = copy / "tskd_student_segmentation" / "configs" / "train.json"

    def set_decoder(name):
        train.write_text(re.sub(r'"decoder": "\w+"', f'"decoder": "{name}"', train.read_text()))

    set_decoder("unetr")  # the default the stored results were made with
    spec = dict(run_dir=tmp_path / "r", datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny")
    row = Experiment(ExperimentSpec(**spec)).finetune(sample_dataset, "ts_kd", 4, 0)
    before = {s.task: s.signature() for s in staged if s.task == "finetune"}
    assert row["student"] == "vit_tiny + unetr" and all("decoder" not in s.overrides for s in staged)
    set_decoder("light")  # today's default
    staged.clear()
    row = Experiment(ExperimentSpec(**spec)).finetune(sample_dataset, "ts_kd", 4, 0)
    assert row["student"] == "vit_tiny + light"
    assert {s.task: s.overrides.get("decoder") for s in staged} == {"teacher": None, "ts_kd_cache": "light", "ts_kd": "light", "finetune": "light"}
    assert [s.signature() for s in staged if s.task == "finetune"] != list(before.values())
    staged.clear()
    Experiment(ExperimentSpec(**spec, decoder="unetr")).finetune(sample_dataset, "ts_kd", 4, 0)
    # the old student asked for by name once it is no longer the default: the bundle is told, the signature is the old one
    assert [s.overrides.get("decoder") for s in staged if s.task == "finetune"] == ["unetr"]
    assert [s.signature() for s in staged if s.task == "finetune"] == list(before.values())


def test_distill_steps_fix_the_distillation_compute_whatever_the_transfer_set(sample_dataset, tmp_path, staged, monkeypatch):
    from tskd_components.data.dataset import read_split

    spec = dict(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny")
    Experiment(ExperimentSpec(**spec)).finetune(sample_dataset, "ts_kd", 4, 0)
    assert [s.overrides["max_epochs"] for s in staged if s.task == "ts_kd"] == [SCALES["tiny"].distill_epochs]  # default: epochs
    num_real = len(read_split(sample_dataset)["train"])
    folders = {"real": sample_dataset}
    for name, count in (("even", 64), ("odd", 70)):  # batch 8: 8 steps per epoch (6 epochs are 48 steps), 9 (6 are 54)
        folders[name] = tmp_path / f"{name}_set"
        folders[name].mkdir()
        for i in range(count):
            Image.new("L", (8, 8), i).save(folders[name] / f"img_{i:02d}.png")
    budgets = {}
    for name, folder in folders.items():
        staged.clear()
        monkeypatch.setattr(Experiment, "transfer_dir", lambda self, dataset, folder=folder: folder)
        Experiment(ExperimentSpec(**spec, distill_steps=48, variant=name)).finetune(sample_dataset, "ts_kd", 4, 0)
        budgets[name] = next({k: s.overrides[k] for k in ("max_epochs", "max_steps") if k in s.overrides} for s in staged if s.task == "ts_kd")
    real_epochs = math.ceil(48 / math.ceil(num_real / 8))
    assert budgets["real"] == {"max_epochs": real_epochs, **({"max_steps": 48} if real_epochs * math.ceil(num_real / 8) != 48 else {})}
    assert budgets["even"] == {"max_epochs": 6}  # whole epochs meet the budget: no limit named, the signature of before
    assert budgets["odd"] == {"max_epochs": 6, "max_steps": 48}  # the 6th epoch ends after its 3rd step


def test_a_step_budget_is_whole_epochs_and_a_limit_only_where_they_overshoot():
    assert step_budget(180, 140, 8) == {"max_epochs": 10}  # 18 steps per epoch
    assert step_budget(180, 420, 8) == {"max_epochs": 4, "max_steps": 180}  # 53 per epoch: 3 epochs are 159, 4 are 212
    assert step_budget(5, 140, 8) == {"max_epochs": 1, "max_steps": 5}
