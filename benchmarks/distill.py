"""Cost of cached TS-KD pre-training: one epoch over N images divided by one supervised student epoch over the
same N images, both with MONAI's SupervisedTrainer in this process (goal <= 1.3).

    python benchmarks/distill.py [--dataset-dir sample_data/hc18] [--images 32] [--image-size 256] [--epochs 3]

The cache holds SAM vit_b targets (4 blocks of 768 x 16 x 16 and the logits at 1/4 resolution); the teacher is
random (its weights do not change the cost) and is run once, before timing, to build the cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.transforms import Compose

from tskd_components.data import augmentation, labeled_datalist, preprocessing, read_dataset_info
from tskd_components.distill import TeacherCache, build_teacher_cache
from tskd_components.distill import DistillationStep, TeacherTargetsd, distillation_augmentation
from tskd_components.distill import TaskSpecificKDLoss
from tskd_components.networks import ViTSegmenter, build_lora_sam
from tskd_components.networks import sam_hidden_layers, sam_spec

REPO = Path(__file__).resolve().parents[1]


def epoch_seconds(trainer: SupervisedTrainer, epochs: int) -> float:
    times: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: times.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: times.append(time.perf_counter() - times.pop()))
    trainer.run()
    return statistics.median(times[1:] if len(times) > 1 else times)  # first epoch warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=str(REPO / "sample_data" / "hc18"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    classes = read_dataset_info(args.dataset_dir).num_classes
    items = labeled_datalist(args.dataset_dir, args.images, seed=0)
    layers = list(sam_hidden_layers("vit_b"))

    sup_data = CacheDataset(items, Compose([preprocessing(args.image_size, classes, 3), augmentation()]), progress=False)
    student = ViTSegmenter(args.image_size, 3, classes)
    sup = SupervisedTrainer(device=torch.device("cpu"), max_epochs=args.epochs, train_data_loader=DataLoader(sup_data, batch_size=args.batch_size, shuffle=True),
                            network=student, optimizer=torch.optim.AdamW(student.parameters(), 1e-4), loss_function=DiceCELoss(to_onehot_y=True, softmax=True))
    supervised = epoch_seconds(sup, args.epochs)

    with tempfile.TemporaryDirectory() as tmp:
        teacher = build_lora_sam("vit_b", classes, args.image_size, random_init=True)
        images = [{k: v for k, v in it.items() if k != "label"} for it in items]
        pre = preprocessing(args.image_size, channels=3, with_label=False)
        build_teacher_cache(teacher, images, pre, tmp, "bench", layers, logits_size=args.image_size // 4)
        del teacher
        cache = TeacherCache(tmp, "bench", layers)
        kd_data = CacheDataset(images, Compose([pre, TeacherTargetsd(cache), distillation_augmentation(cached=True)]), progress=False)
        student = ViTSegmenter(args.image_size, 3, classes)
        loss = TaskSpecificKDLoss(student.embed_dim, sam_spec("vit_b").embed_dim, len(layers))
        kd = SupervisedTrainer(device=torch.device("cpu"), max_epochs=args.epochs, train_data_loader=DataLoader(kd_data, batch_size=args.batch_size, shuffle=True),
                               network=student, optimizer=torch.optim.AdamW(list(student.parameters()) + list(loss.parameters()), 1e-4),
                               loss_function=loss, iteration_update=DistillationStep(), decollate=False)
        distilled = epoch_seconds(kd, args.epochs)

    print(f"{args.images} images at {args.image_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"supervised student epoch: {supervised:.2f} s")
    print(f"cached TS-KD epoch (vit_b targets): {distilled:.2f} s")
    print(f"ratio TS-KD / supervised: {distilled / supervised:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
