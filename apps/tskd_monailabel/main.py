"""MONAI Label app serving and fine-tuning TSKD student bundles, after MONAI Label's ``monaibundle`` sample app.

    monailabel start_server --app apps/tskd_monailabel --studies <image folder> \
        --conf models tskd_student_segmentation [--conf zoo_url <folder or URL holding <name>.zip>]

``--conf models`` names one or more bundles (comma-separated). Each is read from ``<app>/model/<name>``; a bundle
that is not there is downloaded: from ``<zoo_url>/<name>.zip`` (what ``tskd package`` writes; ``file://`` works
offline) when ``zoo_url`` is given, else from the MONAI model zoo as the ``monaibundle`` app does (``zoo_source``).
Weights listed in a bundle's ``large_files.yml`` are fetched (and checked) when ``models/model.pt`` is missing.
Every bundle gets an inference task and a training task (``POST /train/<name>``: fine-tune on the datastore's
labelled images, replacing the served ``model.pt``). Version pairing and the install conflict with the main
environment: ``apps/tskd_monailabel/README.md``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Sequence

from monai.bundle import download, download_large_files
from monai.transforms import SaveImaged, SqueezeDimd
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import get_bundle_models

logger = logging.getLogger(__name__)


class Student2DInferTask(BundleInferTask):
    """MONAI Label's bundle task for a 2D student: the bundle's writers are left to its own runs (MONAI Label's
    ``SaveImaged`` filter, and the overlay writer, whether from ``tskd_components`` or a packaged bundle's
    ``scripts/``), and the (1, H, W) mask loses its channel, since MONAI Label's writer takes a 2D label as (H, W)
    (its ``Restored`` squeezes only 3D labels)."""

    def post_transforms(self, data=None) -> Sequence[Callable]:
        kept = [t for t in super().post_transforms(data) if type(t).__name__ != "SaveOverlayd"]
        return [*kept, SqueezeDimd(keys="pred", dim=0)]


class StudentTrainTask(BundleTrainTask):
    """MONAI Label's bundle training task, with what a student's ``train.json`` takes from a TSKD dataset folder
    given from the bundle instead: classes from ``metadata.json``, the datastore's images as the labelled and
    validation lists, a fresh run (no resume from earlier interval checkpoints, no best score of an earlier
    validation set) in ``runs/monailabel``, and the cosine schedule as long as the requested epochs."""

    def _update_overrides(self, overrides):
        meta = json.loads(Path(self.bundle_metadata_path).read_text())["network_data_format"]["outputs"]["pred"]
        classes = [meta["channel_def"][str(i)] for i in range(meta["num_channels"])]
        validation = overrides.get(self.const.key_validate_dataset_data(), [])
        overrides.update({
            "num_classes": len(classes), "class_names": classes, "train#datalist": overrides[self.const.key_train_dataset_data()],
            "validate#datalist": validation, self.const.key_validate_dataset_data(): validation,
            "max_epochs": overrides[self.const.key_train_trainer_max_epochs()], "resume": False,
            "output_dir": os.path.join(self.bundle_path, "runs", "monailabel"),
        })
        Path(self.bundle_path, "models", "model.pt.best.json").unlink(missing_ok=True)  # new labels, new validation set
        return overrides


def resolve_bundles(app_dir: str, conf: Dict[str, str]) -> Dict[str, Path]:
    """``--conf models`` as folders under ``<app>/model``, downloading the missing ones (``zoo_url`` or the zoo)."""
    names = [m.strip() for m in conf.get("models", "").split(",") if m.strip()]
    if not names:
        raise ValueError("name the bundles to serve: --conf models <name>[,<name>...] (folders in <app>/model, or bundles to "
                         "download from --conf zoo_url <folder or URL with <name>.zip>)")
    model_dir = Path(app_dir) / "model"
    model_dir.mkdir(exist_ok=True)
    zoo_url = conf.get("zoo_url", "")
    if zoo_url:
        for name in names:
            if not (model_dir / name).is_dir():
                download(name=name, bundle_dir=str(model_dir), url=f"{zoo_url.rstrip('/')}/{name}.zip")
        bundles = {name: model_dir / name for name in names}
    else:
        bundles = {name: Path(p) for name, p in get_bundle_models(app_dir, conf).items()}
    for name, path in bundles.items():
        if not (path / "models" / "model.pt").is_file() and any(path.glob("large_files.*")):
            download_large_files(bundle_path=str(path))
        if not (path / "models" / "model.pt").is_file():
            raise FileNotFoundError(f"{path / 'models' / 'model.pt'} not found: bundle {name} has no trained weights (package a trained "
                                    "student with `tskd package`, or list its weights in large_files.yml)")
    return bundles


class TSKDStudentApp(MONAILabelApp):
    """Serves and fine-tunes the student bundles named by ``--conf models``, each under its folder name."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.bundles = resolve_bundles(app_dir, conf)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="TSKD students",
                         description="ViT-Tiny students distilled from Segment Anything (TS-KD)", version="0.2.0")

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, path in self.bundles.items():
            task = Student2DInferTask(str(path), self.conf, type=InferType.SEGMENTATION, post_filter=[SaveImaged])
            if not task.is_valid():
                raise RuntimeError(f"{path} cannot be served: MONAI Label needs configs/inference.json, configs/metadata.json and models/model.pt")
            infers[name] = task
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        for name, path in self.bundles.items():
            task = StudentTrainTask(str(path), self.conf)
            if task.is_valid():
                trainers[name] = task
            else:
                logger.warning(f"{name}: no configs/train.json, so it is served without a training task")
        return trainers
