"""Bundle runs shared by several end-to-end tests."""

import shutil
from pathlib import Path

import pytest
from monai.bundle import run

from tests.conftest import REPO, SAMPLE

BUNDLES = REPO / "bundles"
# a tiny, randomly initialised SAM of the real classes, so a teacher trains in seconds on CPU
TINY_TEACHER = {"sam_variant": "tiny", "random_init": True, "image_size": 64, "batch_size": 4}


def ddp_failure(stderr: str) -> str:
    """What a failed torchrun printed that explains it: each rank's first traceback (torchrun's own summary at the
    end names only exit codes)."""
    tracebacks = [part for part in stderr.split("Traceback (most recent call last):")[1:] if "torch/distributed/run.py" not in part]
    return "\n---\n".join(t[-2500:] for t in tracebacks[:2]) or stderr[-3000:]


def run_bundle(name: str, *configs: str, **overrides):
    """``monai.bundle.run`` of ``bundles/<name>/configs/<configs...>`` (later files overlay earlier ones)."""
    folder = BUNDLES / name / "configs"
    files = [str(folder / c) for c in configs]
    return run(config_file=files if len(files) > 1 else files[0], meta_file=str(folder / "metadata.json"),
               logging_file=str(folder / "logging.conf"), **overrides)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory) -> Path:
    """bundles/tskd_sam_lora trained for 2 epochs on 8 labels of the HC18 sample (bundle_root = returned folder)."""
    root = tmp_path_factory.mktemp("sam_lora_bundle")
    shutil.copytree(BUNDLES / "tskd_sam_lora" / "configs", root / "configs")
    run_bundle("tskd_sam_lora", "train.json", bundle_root=str(root), dataset_dir=str(SAMPLE), max_epochs=2, num_labeled=8, **TINY_TEACHER)
    return root
