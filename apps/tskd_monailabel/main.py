"""MONAI Label app serving a trained ``tskd_student_segmentation`` bundle (MONAI Label's BundleInferTask).

    monailabel start_server --app apps/tskd_monailabel --studies <image folder> \
        --conf bundle <path to a trained tskd_student_segmentation bundle>

``--conf bundle`` defaults to ``bundles/tskd_student_segmentation`` of this repository; the bundle needs
``configs/inference.json`` and ``models/model.pt`` (train it, or unpack one from the zoo). Version pairing and
the install conflict with the main environment: ``apps/tskd_monailabel/README.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Sequence

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monai.transforms import SaveImaged, SqueezeDimd

from tskd_components.visualize import SaveOverlayd

logger = logging.getLogger(__name__)
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "tskd_student_segmentation"


class Student2DInferTask(BundleInferTask):
    """MONAI Label's bundle task for a 2D student: the (1, H, W) mask loses its channel, since MONAI Label's
    writer takes a 2D label as (H, W) (its ``Restored`` squeezes only 3D labels)."""

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return [*super().post_transforms(data), SqueezeDimd(keys="pred", dim=0)]


class TSKDStudentApp(MONAILabelApp):
    """Serves one student bundle as the segmentation model named after the bundle's folder."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.bundle = Path(conf.get("bundle", DEFAULT_BUNDLE)).resolve()
        if not (self.bundle / "models" / "model.pt").is_file():
            raise FileNotFoundError(f"{self.bundle / 'models' / 'model.pt'} not found: pass --conf bundle <trained tskd_student_segmentation "
                                    "bundle> (train it with configs/train.json, or unpack one from the zoo)")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="TSKD student",
                         description="ViT-Tiny student distilled from Segment Anything (TS-KD)", version="0.1.0")

    def init_infers(self) -> Dict[str, InferTask]:
        # as MONAI Label's monaibundle app does, plus: the bundle's overlay writer is left to the bundle's own runs
        task = Student2DInferTask(str(self.bundle), self.conf, type=InferType.SEGMENTATION, post_filter=[SaveImaged, SaveOverlayd])
        if not task.is_valid():
            raise RuntimeError(f"{self.bundle} cannot be served: MONAI Label needs configs/inference.json, configs/metadata.json "
                               "and models/model.pt")
        return {self.bundle.name: task}
