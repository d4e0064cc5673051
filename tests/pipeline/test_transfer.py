"""Where a transfer set's synthetic images come from: a recipe's model or samples drawn elsewhere (e.g. on a GPU)."""

import json

import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from tskd_components.data import DatasetError, read_split
from tskd_components.pipeline import Experiment, ExperimentSpec, stages
from tskd_components.synthesis import EMAWeights, build_unet, draw_samples, save_unet


def test_synthetic_images_can_come_from_a_synthesis_recipe(sample_dataset, tmp_path, monkeypatch):
    from tskd_components.synthesis import UNET_WEIGHTS

    ran = []
    monkeypatch.setattr(stages.Stage, "run", lambda self: ran.append(self))
    spec = dict(run_dir=tmp_path / "exp", datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny", transfer_size=27,
                synthesis_dir=str(tmp_path / "recipes"))
    with pytest.raises(FileNotFoundError, match="run `tskd synthesis --dataset hc18"):
        Experiment(ExperimentSpec(**spec)).transfer_dir(sample_dataset)
    model = tmp_path / "recipes" / "hc18" / "pool_then_target" / "run" / "model"
    (model / UNET_WEIGHTS).parent.mkdir(parents=True)
    (model / UNET_WEIGHTS).write_bytes(b"unet")
    (model / "unet" / "config.json").write_text(json.dumps({"sample_size": 48}))
    out = Experiment(ExperimentSpec(**spec)).transfer_dir(sample_dataset)
    assert [s.task for s in ran] == ["transfer_set"]  # no diffusion training of its own
    assert ran[0].overrides["model_dir"] == str(model) and ran[0].overrides["image_size"] == 48
    assert out.parent.name == "pool_then_target_set_27" and model / UNET_WEIGHTS in ran[0].inputs


def test_a_transfer_set_can_take_samples_drawn_elsewhere_without_a_model_here(sample_dataset, tmp_path):
    torch.manual_seed(0)
    save_unet(EMAWeights(build_unet(32, 1, block_out_channels=(16, 32), attention_levels=(False, True))),
              DDPMScheduler(num_train_timesteps=1000), tmp_path / "model")
    samples = tmp_path / "gpu_samples"
    draw_samples(tmp_path / "model", samples, 5, steps=2, batch_size=2, seed=3)
    num_real = len(read_split(sample_dataset)["train"])
    spec = dict(run_dir=tmp_path / "exp", datasets=[sample_dataset], num_labeled=[4], methods=["ts_kd"], scale="tiny", synthesis_samples=str(samples))
    with pytest.raises(DatasetError, match="holds 5 samples but 6 are needed"):
        Experiment(ExperimentSpec(**spec, transfer_size=num_real + 6)).transfer_dir(sample_dataset)
    out = Experiment(ExperimentSpec(**spec, transfer_size=num_real + 3)).transfer_dir(sample_dataset)
    manifest = json.loads((out / "manifest.json").read_text())
    drawn = json.loads((samples / "samples.json").read_text())
    synthetic = [e for e in manifest["images"] if e["source"] == "synthetic"]
    assert manifest["num_real"] == num_real and len(synthetic) == 3
    assert [e["sha256"] for e in synthetic] == [f["sha256"] for f in drawn["files"][:3]]  # the first samples, unchanged
    assert all(e["model_sha256"] == drawn["model_sha256"] and e["seed"] == 3 for e in synthetic)
    assert out.parent.name == f"drawn_{drawn['model_sha256'][:12]}_set_{num_real + 3}"
    assert not (tmp_path / "exp" / "hc18" / "transfer" / "synthesis").exists()  # no diffusion model trained here
    assert Image.open(out / "images" / "synthetic_00000.png").size == (32, 32)


def test_drawn_samples_and_a_recipe_model_are_not_mixed(sample_dataset, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        ExperimentSpec(run_dir=tmp_path, datasets=[sample_dataset], num_labeled=[4], scale="tiny", transfer_size=40,
                       synthesis_dir=str(tmp_path / "recipes"), synthesis_samples=str(tmp_path / "samples"))
