"""``tskd synthesis``: the diffusion recipes of one target as resumable stages, compared in recipe.md."""

import json

import pytest

from tests.conftest import SAMPLE
from tskd_components.pipeline.synthesis_recipe import ARMS, SynthesisRecipe, flat_quality
from tskd_components.synthesis.colour import SAMPLES_MATCHED, SAMPLES_RAW

TINY = {"block_out_channels": [16, 32], "attention_levels": [False, True]}


def test_recipes_run_compare_and_resume(small_copy, tmp_path, capsys):
    pool = small_copy(SAMPLE, n=4)
    pool = pool.rename(pool.with_name("other_pool"))  # 4 training images: 1 step per epoch at batch 8
    settings = dict(run_dir=tmp_path / "runs", target=SAMPLE, pool=[pool], pool_steps=3, target_steps=2, today_epochs=1,
                    image_size=32, batch_size=8, report_samples=4, ddim_steps=2, overrides=TINY)
    with pytest.raises(ValueError, match="unknown synthesis arms"):
        SynthesisRecipe(**settings, arms=["latent"])
    # one process's share of the arms: the comparison holds what has finished and names the rest
    md = SynthesisRecipe(**settings, arms=["today"]).run()
    assert list(json.loads((md.parent / "recipe.json").read_text())["arms"]) == ["today", "today, matched samples"]
    assert "Not finished yet: target_long, pool_then_target, colour_pool_then_target." in md.read_text() and not (md.parent / "pool").exists()
    recipe = SynthesisRecipe(**settings)
    md = recipe.run()
    assert "Not finished yet" not in md.read_text()
    summary = json.loads((md.parent / "recipe.json").read_text())
    assert list(summary["arms"]) == [row for arm in ARMS for row in (arm, f"{arm}, matched samples")] and summary["pool"] == ["other_pool"]
    # 24 target training images = 3 steps per epoch; the pool's 4 = 1 step per epoch
    assert [summary["arms"][a]["epochs"] for a in ARMS] == [1, 2, 1, 1]
    pool_stage = json.loads((md.parent / "pool" / "stage.json").read_text())
    assert pool_stage["overrides"]["max_epochs"] == 3 and pool_stage["overrides"]["pool"] == [str(pool.resolve())]
    final = json.loads((md.parent / "pool_then_target" / "stage.json").read_text())["overrides"]
    assert final["initial_weights"] == str(md.parent / "pool" / "run" / "model") and final["pool"] == []
    assert "colour_match" not in pool_stage["overrides"]  # the plain arms keep their stage signatures
    # today is the before-reference: the objective of then (epsilon, plain MSE); the others take the bundle's
    today = json.loads((md.parent / "today" / "stage.json").read_text())["overrides"]
    assert (today["prediction_type"], today["snr_gamma"]) == ("epsilon", 0.0) and "prediction_type" not in pool_stage["overrides"]
    exported = json.loads((md.parent / "target_long" / "run" / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert exported["prediction_type"] == "v_prediction"
    colour = json.loads((md.parent / "pool_colour" / "stage.json").read_text())["overrides"]
    assert colour["colour_match"] is True and colour["pool"] == [str(pool.resolve())]
    final = json.loads((md.parent / "colour_pool_then_target" / "stage.json").read_text())["overrides"]
    assert final["initial_weights"] == str(md.parent / "pool_colour" / "run" / "model") and "colour_match" not in final
    row = summary["arms"]["pool_then_target"]
    seconds = [json.loads((md.parent / arm / "stage.json").read_text())["seconds"] for arm in ("pool", "pool_then_target")]
    assert row["train_seconds"] == sum(seconds) and row["standin_fid"] is None and row["fid"] > 0
    assert "| pool_then_target |" in md.read_text()
    # each arm's samples matched to the target's statistics: its own report of the same model, at the same cost
    matched = json.loads((md.parent / "pool_then_target" / "matched_samples" / "quality" / "quality.json").read_text())
    plain = json.loads((md.parent / "pool_then_target" / "run" / "quality" / "quality.json").read_text())
    assert (matched["samples"], plain["samples"]) == (SAMPLES_MATCHED, SAMPLES_RAW) and matched["fid"] != plain["fid"]
    assert summary["arms"]["pool_then_target, matched samples"]["train_seconds"] == row["train_seconds"]
    capsys.readouterr()
    recipe.run()  # every stage is done: nothing runs again
    assert capsys.readouterr().out.count("[skip]") == 10
    SynthesisRecipe(**settings, arms=["today"], match_samples=False).run()
    assert capsys.readouterr().out.count("[skip]") == 1


def test_the_target_in_the_pool_is_refused_in_one_line(tmp_path, capsys):
    from tskd_components.pipeline.cli import main

    code = main(["synthesis", "--dataset", "hc18", "--data-root", str(SAMPLE.parent), "--pool", "hc18", "--run-dir", str(tmp_path)])
    assert code == 2 and "are in the pre-training pool" in capsys.readouterr().err


def test_the_training_objective_reaches_the_recipe_only_when_given(small_copy, tmp_path, monkeypatch):
    from tskd_components.pipeline import cli

    pool = small_copy(SAMPLE, n=2)
    pool.rename(pool.with_name("other_pool"))
    made = []
    monkeypatch.setattr(SynthesisRecipe, "run", lambda self: made.append(self) or tmp_path / "recipe.md")
    common = ["synthesis", "--dataset", str(SAMPLE), "--data-root", str(tmp_path), "--pool", "other_pool", "--run-dir", str(tmp_path / "runs")]
    assert cli.main(common + ["--prediction-type", "v_prediction", "--snr-gamma", "5"]) == 0
    assert cli.main(common) == 0
    assert [dict(r.overrides) for r in made] == [{"prediction_type": "v_prediction", "snr_gamma": 5.0}, {}]  # {}: the bundle's


def test_presets_take_sizes_from_the_bundle_configs_and_steps_from_the_preset(tmp_path):
    base = dict(run_dir=tmp_path, target=SAMPLE, pool=[])
    cpu, gpu = SynthesisRecipe(**base), SynthesisRecipe(**base, preset="gpu")
    assert (cpu.task, cpu.image_size, cpu.batch_size, cpu.pool_steps, cpu.target_steps) == ("synthesis", 64, 16, 1400, 800)
    assert (gpu.task, gpu.image_size, gpu.batch_size, gpu.pool_steps, gpu.target_steps) == ("synthesis_gpu", 128, 32, 10000, 5000)
    assert SynthesisRecipe(**base, preset="gpu", image_size=256, pool_steps=7).image_size == 256  # a setting given wins
    with pytest.raises(ValueError, match="unknown synthesis preset 'tpu'"):
        SynthesisRecipe(**base, preset="tpu")


def test_a_missing_stand_in_is_refused_before_any_training(tmp_path):
    base = dict(run_dir=tmp_path / "runs", target=SAMPLE, pool=[], arms=["today"])
    with pytest.raises(FileNotFoundError, match="standin.pth not found"):
        SynthesisRecipe(**base, standin_checkpoint=str(tmp_path / "standin.pth"))
    (tmp_path / "other.pth").write_bytes(b"not a stand-in")  # a file without the record `tskd foundation` writes beside it
    with pytest.raises(FileNotFoundError, match="no standin.json beside it"):
        SynthesisRecipe(**base, standin_checkpoint=str(tmp_path / "other.pth"))
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_each_row_names_the_stand_in_whose_features_it_was_scored_on():
    base = {"fid": 1.0, "precision": 0.5, "recall": 0.5, "two_sample_accuracy": 0.9, "memorisation": {"share_copied": 0.0}}
    scores = {"fid": 2.0, "precision": 0.1, "recall": 0.2, "two_sample_accuracy": 0.8}
    named = flat_quality(base | {"standin": {"checkpoint": "a/standin.pth", "sha256": "ef215f12a162" + "0" * 52, **scores,
                                             "two_sample_ci95": [0.7, 0.9]}})
    assert named["standin"] == "ef215f12a162" and named["standin_fid"] == 2.0 and named["standin_two_sample_ci95"] == [0.7, 0.9]
    assert flat_quality(base | {"standin": {"checkpoint": "a/standin.pth", **scores}})["standin"] == "unrecorded"  # older reports
    assert flat_quality(base)["standin"] is None and flat_quality(base)["standin_fid"] is None
