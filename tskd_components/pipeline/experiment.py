"""The paper's comparison as one resumable run: pre-training methods x datasets x label budgets x seeds.

Every stage is a bundle run (``monai.bundle.run``) under ``<run_dir>/<dataset>/...``; see :class:`Experiment`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data.dataset import load_transfer_set, read_split, validate_dataset
from ..utils.io import write_json
from ..utils.run_record import package_versions
from .scales import SCALES, Scale
from .console import progress
from .stages import Stage, configs_dir, pin_bundle_configs, student_choice, student_overrides
from .stopping import stopping_rule
from .transfer import build_transfer_dir
from ..distill.cache import INDEX as CACHE_INDEX
from ..engines.handlers import TrainingSummary
from ..engines.metrics import METRICS_FILE
from ..foundation.model import read_standin_record
from ..networks.decoders import DECODERS
from ..networks.lora import MERGED_FILE
from ..networks.student import list_students

PRETRAINED_FILE = "student_pretrained.safetensors"  # where pre-training stages export the student (export_path)

METHODS = ("scratch", "scratch_matched", "unet_scratch", "mae_imagenet", "mae", "mocov3", "ta_kd", "ts_kd")
PAPER_METHODS = ("scratch", "mae_imagenet", "mae", "mocov3", "ta_kd", "ts_kd")
RESULT_FILE = "result.json"
# a MONAI BasicUNet of about the student's size (6.5 M parameters at 2 classes), the reference a user would pick
UNET_FEATURES = (32, 64, 128, 256, 416, 32)


@dataclass
class ExperimentSpec:
    """What to run. ``transfer_size`` above the number of real training images adds synthetic images (diffusion)."""

    run_dir: Path
    datasets: list[Path]
    num_labeled: list[int]
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    scale: str = "small"
    transfer_size: int = 0
    teacher_labels: str = "budget"
    sam_checkpoint: str = ""
    mae_imagenet_weights: str = ""
    lora_rank: int | None = None
    image_size: int | None = None  # the scale's unless given; a run folder of its own (teacher folder names omit the size)
    variant: str = ""
    synthesis_dir: str = ""  # a `tskd synthesis` run folder: its <dataset>/<synthesis_arm> model makes the synthetic images
    synthesis_arm: str = "pool_then_target"
    synthesis_samples: str = ""  # a drawn-samples folder (e.g. drawn on a GPU): its first samples fill the transfer sets
    match_samples: bool = False  # synthetic images take a real image's channel statistics (set only then: old sets' signatures)
    student_name: str = ""  # a registered student and a decoder for every ViT student stage (default: the bundles')
    decoder: str = ""
    num_workers: int = 0  # data-loader workers of every stage (0: load in the training process, the bundles' default)
    distill_steps: int = 0  # 0: the scale's distill_epochs (a larger transfer set gets more steps); N: N steps at any size

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.methods) - set(METHODS)):
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; choose from {list(SCALES)}")
        if self.teacher_labels not in ("budget", "all"):
            raise ValueError("teacher_labels must be 'budget' (teacher sees the student's labels) or 'all' (whole train split)")
        for d in self.datasets:
            validate_dataset(d)  # every split's files, before the first stage
        if (self.student_name and self.student_name not in list_students()) or (self.decoder and self.decoder not in DECODERS):
            raise ValueError(f"unknown student {self.student_name!r} or decoder {self.decoder!r}; choose from {list_students()} and {sorted(DECODERS)}")
        if self.synthesis_samples and self.synthesis_dir:
            raise ValueError("synthetic images come from --synthesis-samples or from --synthesis-dir's model, not both")
        if any(n < 1 for n in self.num_labeled):
            raise ValueError(f"label budgets must be at least 1, got {self.num_labeled}")
        params = SCALES[self.scale]
        if self.sam_checkpoint and not Path(self.sam_checkpoint).is_file():
            raise FileNotFoundError(f"--sam-checkpoint {self.sam_checkpoint} does not exist")
        if not params.random_init and not self.sam_checkpoint and {"ta_kd", "ts_kd", "scratch_matched"} & set(self.methods):
            raise FileNotFoundError(f"scale {self.scale!r} fine-tunes the official SAM {params.sam_variant}: pass --sam-checkpoint "
                                    "(e.g. sam_vit_b_01ec64.pth from https://github.com/facebookresearch/segment-anything)")

    @property
    def params(self) -> Scale:
        base = SCALES[self.scale]
        return replace(base, **{k: v for k, v in (("lora_rank", self.lora_rank), ("image_size", self.image_size)) if v})


def epochs_for(steps: int, num_items: int, batch_size: int) -> int:
    """Epochs giving about ``steps`` iterations over ``num_items`` items."""
    return max(1, round(steps / math.ceil(num_items / batch_size)))


def step_budget(steps: int, num_items: int, batch_size: int) -> dict[str, int]:
    """Overrides that train for exactly ``steps`` iterations over ``num_items`` items: ``max_epochs`` (the whole
    epochs they need) and, where those would take more steps, ``max_steps`` to end the last epoch early. A budget
    that whole epochs meet names no ``max_steps`` (its stages keep the signatures they had before the limit existed)."""
    per_epoch = math.ceil(num_items / batch_size)
    epochs = math.ceil(steps / per_epoch)
    return {"max_epochs": epochs, **({"max_steps": steps} if epochs * per_epoch != steps else {})}


class Experiment:
    """Plans and runs the stages of an :class:`ExperimentSpec`; each result cell lands in ``<cell>/result.json``.

    Layout of ``<run_dir>/<dataset>/``: ``transfer/`` (synthesis model + transfer sets, when synthetic images are
    asked for), ``teacher_n<N>_s<seed>[_r<rank>]/``, ``mae_s<seed>/``, ``mocov3_s<seed>/``, ``ta_kd_s<seed>/`` (frozen-SAM cache +
    distillation), ``ts_kd_n<N>_s<seed>/`` (teacher cache + distillation), ``finetune/<method>_n<N>_s<seed>/``
    (student training, test evaluation, ``result.json``). A study's variant keeps its own stages in
    ``<run_dir>/<dataset>_<variant>/`` and shares the teachers and synthesis model with the plain run.
    """

    def __init__(self, spec: ExperimentSpec) -> None:
        self.spec = spec
        self.p = spec.params
        self.root = Path(spec.run_dir).resolve()

    # -- helpers -----------------------------------------------------------------------------------------------
    def _stage(self, stage: Stage) -> Stage:
        stage.run()
        return stage

    def _ds_root(self, dataset: Path) -> Path:
        """Folder of this variant's stages for ``dataset``."""
        return self.root / (Path(dataset).name + (f"_{self.spec.variant}" if self.spec.variant else ""))

    def _shared_root(self, dataset: Path) -> Path:
        """Folder of stages that variants share (teachers, synthesis): their names carry what they depend on."""
        return self.root / Path(dataset).name

    def _common(self, dataset: Path) -> dict[str, Any]:
        workers = {"num_workers": self.spec.num_workers} if self.spec.num_workers else {}  # default stages keep their signatures
        return {"dataset_dir": str(Path(dataset).resolve()), "image_size": self.p.image_size, **workers}

    def _student(self) -> dict[str, Any]:
        """The student variant's overrides (none for the original ViT-Tiny + UNETR default: see ``student_overrides``)."""
        return student_overrides(self.spec.student_name, self.spec.decoder)

    def _sam(self) -> dict[str, Any]:
        return {"sam_variant": self.p.sam_variant, "random_init": self.p.random_init, "sam_checkpoint": self.spec.sam_checkpoint}

    # -- transfer set ------------------------------------------------------------------------------------------
    def transfer_dir(self, dataset: Path) -> Path:
        """The dataset itself (its train split) or, when ``transfer_size`` exceeds it, real + synthetic images."""
        return build_transfer_dir(self.spec, self.p, dataset, self._shared_root(dataset) / "transfer", self._common(dataset))

    # -- pre-training ------------------------------------------------------------------------------------------
    def ssl_weights(self, dataset: Path, method: str, seed: int) -> Path:
        """MAE / MoCo v3 pre-training with ``seed``: every seed re-runs it, so the spread includes pre-training's."""
        folder = self._ds_root(dataset) / f"{method}_s{seed}"
        transfer = self.transfer_dir(dataset)
        weights = folder / "run" / PRETRAINED_FILE
        init = self.spec.mae_imagenet_weights if method == "mae" else ""
        overrides = {**self._common(dataset), "transfer_dir": str(transfer), "seed": seed, "output_dir": str(folder / "run"),
                     "export_path": str(weights), "max_epochs": self.p.mae_epochs if method == "mae" else self.p.mocov3_epochs,
                     "initial_weights": init}
        self._stage(Stage(f"{method} pre-training", f"{method} {Path(dataset).name}", folder, method, overrides,
                          inputs=[transfer] + ([Path(init)] if init else []), outputs=[weights]))
        return weights

    def teacher(self, dataset: Path, num_labeled: int, seed: int) -> tuple[Path, Path]:
        """Train + test-evaluate the LoRA-SAM teacher; returns (merged weights, metrics.json)."""
        n = num_labeled if self.spec.teacher_labels == "budget" else 0
        num_items = n or len(read_split(dataset)["train"])
        rank = f"_r{self.spec.lora_rank}" if self.spec.lora_rank else ""
        folder = self._shared_root(dataset) / f"teacher_n{n or 'all'}_s{seed}{rank}"
        epochs = epochs_for(self.p.teacher_steps, num_items, self.p.teacher_batch)
        ckpt_dir, metrics_dir = folder / "models", folder / "run" / "eval_test"
        overrides = {**self._common(dataset), **self._sam(), "train_encoder": self.p.teacher_train_encoder, "lora_rank": self.p.lora_rank,
                     "lora_alpha": float(self.p.lora_rank), "num_labeled": n, "seed": seed, "max_epochs": epochs,
                     "val_interval": max(1, epochs // 10), "batch_size": self.p.teacher_batch, "output_dir": str(folder / "run"),
                     "ckpt_dir": str(ckpt_dir), "metrics_dir": str(metrics_dir)}
        merged, metrics = ckpt_dir / MERGED_FILE, metrics_dir / METRICS_FILE
        checkpoint = [Path(self.spec.sam_checkpoint)] if self.spec.sam_checkpoint else []
        self._stage(Stage("teacher", f"teacher {Path(dataset).name} n{n or 'all'} s{seed}", folder, "teacher", overrides,
                          inputs=[Path(dataset), *checkpoint], outputs=[merged, metrics], after="teacher_evaluation"))
        return merged, metrics

    def distilled_weights(self, dataset: Path, mode: str, teacher: Path | None, folder: Path, seed: int) -> Path:
        """Teacher cache on the transfer set, then distillation (``ts_kd`` from ``teacher``, ``ta_kd`` from frozen SAM)."""
        transfer = self.transfer_dir(dataset)
        cache, run = folder / "cache", folder / "run"
        weights = run / PRETRAINED_FILE
        batch = json.loads((configs_dir("tskd_distill") / "train.json").read_text())["batch_size"]
        budget = (step_budget(self.spec.distill_steps, len(load_transfer_set(transfer)), batch) if self.spec.distill_steps
                  else {"max_epochs": self.p.distill_epochs})
        overrides = {**self._common(dataset), **self._sam(), **self._student(), "seed": seed, "cache_dir": str(cache), "transfer_dir": str(transfer),
                     "teacher_weights": str(teacher or ""), **budget, "output_dir": str(run),
                     "export_path": str(weights)}
        frozen = [Path(self.spec.sam_checkpoint)] if self.spec.sam_checkpoint else []  # TA-KD's teacher: the checkpoint itself
        teacher_input = [teacher] if teacher is not None else frozen
        self._stage(Stage(f"{mode} teacher cache", f"{mode} cache {Path(dataset).name} {folder.name}", folder / "cache_stage", f"{mode}_cache",
                          overrides, inputs=[transfer, *teacher_input], outputs=[cache / CACHE_INDEX]))
        self._stage(Stage(f"{mode} distillation", f"{mode} distillation {Path(dataset).name} {folder.name}", folder, mode, overrides,
                          inputs=[cache, *teacher_input], outputs=[weights]))
        return weights

    def initial_weights(self, dataset: Path, method: str, num_labeled: int, seed: int) -> tuple[str, dict[str, Any]]:
        """Weights the student starts from for ``method`` and what they came from."""
        if method in ("scratch", "scratch_matched", "unet_scratch"):
            return "", {}
        if method == "mae_imagenet":
            return self.spec.mae_imagenet_weights, {"weights": self.spec.mae_imagenet_weights}
        if method in ("mae", "mocov3"):
            return str(self.ssl_weights(dataset, method, seed)), {}
        if method == "ta_kd":  # distilled again for every seed (the frozen teacher is the same unless randomly initialised)
            folder = self._ds_root(dataset) / f"ta_kd_s{seed}"
            return str(self.distilled_weights(dataset, "ta_kd", None, folder, seed)), {"teacher": self.teacher_description(frozen=True)}
        merged, metrics = self.teacher(dataset, num_labeled, seed)
        folder = self._ds_root(dataset) / f"ts_kd_n{num_labeled}_s{seed}"
        teacher_metrics = json.loads(metrics.read_text())["metrics"]
        return str(self.distilled_weights(dataset, "ts_kd", merged, folder, seed)), {
            "teacher": self.teacher_description(), "teacher_dice": teacher_metrics["mean_dice"]["mean"],
            "teacher_hd95": teacher_metrics["hd95"]["mean"], "teacher_nsd": teacher_metrics["nsd"]["mean"]}

    def teacher_description(self, frozen: bool = False) -> str:
        weights = self.spec.sam_checkpoint or "random init (no SAM weights)"
        record = read_standin_record(self.spec.sam_checkpoint) if self.spec.sam_checkpoint else None
        if record:
            weights = f"stand-in pre-trained here on {', '.join(record['pool'])}, {record['steps']} steps, sha256 {record['sha256'][:12]}"
        what = "frozen" if frozen else f"LoRA r{self.p.lora_rank}, {'encoder trained' if self.p.teacher_train_encoder else 'encoder frozen'}, labels: {self.spec.teacher_labels}"
        return f"SAM {self.p.sam_variant} [{weights}], {what}"

    # -- fine-tuning -------------------------------------------------------------------------------------------
    def finetune(self, dataset: Path, method: str, num_labeled: int, seed: int) -> dict[str, Any]:
        folder = self._ds_root(dataset) / "finetune" / f"{method}_n{num_labeled}_s{seed}"
        student = "BasicUNet" if method == "unet_scratch" else " + ".join(student_choice(self.spec.student_name, self.spec.decoder).values())
        row: dict[str, Any] = {"dataset": Path(dataset).name, "dataset_dir": str(Path(dataset).resolve()), "variant": self.spec.variant, "method": method, "num_labeled": num_labeled,
                               "seed": seed, "scale": self.spec.scale, "image_size": self.p.image_size, "student": student,
                               "transfer_images": max(self.spec.transfer_size, len(read_split(dataset)["train"]))}
        if method == "mae_imagenet" and not self.spec.mae_imagenet_weights:
            row["status"] = "not run: no ImageNet MAE ViT-Tiny weights given (--mae-imagenet-weights); none can be downloaded here"
            write_json(folder / RESULT_FILE, row)
            return row
        weights, provenance = self.initial_weights(dataset, method, num_labeled, seed)
        steps, patience = self.p.finetune_steps, self.p.finetune_patience
        if method == "scratch_matched":  # as many optimizer steps as TS-KD's distillation + fine-tuning, no early stop
            ts_kd = self.finetune(dataset, "ts_kd", num_labeled, seed)
            steps, patience = ts_kd["pretrain_steps"] + ts_kd["steps"], 0
            provenance = {"matched_to": f"ts_kd: {ts_kd['pretrain_steps']} distillation + {ts_kd['steps']} fine-tuning steps"}
        epochs = epochs_for(steps, num_labeled, self.p.finetune_batch)
        interval, warmup = max(1, epochs // (20 if patience else 10)), self.p.finetune_warmup if patience else 0
        metrics = folder / "run" / "eval_test" / METRICS_FILE
        overrides = {**self._common(dataset), **({} if method == "unet_scratch" else self._student()), "num_labeled": num_labeled, "seed": seed, "max_epochs": epochs,
                     "val_interval": interval, "batch_size": self.p.finetune_batch,
                     "initial_weights": weights, "output_dir": str(folder / "run"), "ckpt_dir": str(folder / "models"),
                     "metrics_dir": str(metrics.parent)} | ({"patience": patience} if patience else {}) | ({"patience_start_epoch": warmup * interval} if warmup else {})
        if method == "unet_scratch":
            overrides["network_def"] = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "in_channels": "@in_channels",
                                        "out_channels": "@num_classes", "features": list(UNET_FEATURES)}
        stage = self._stage(Stage(f"fine-tune {method}", f"fine-tune {Path(dataset).name} {method} n{num_labeled} s{seed}", folder, "finetune",
                                  overrides, inputs=[Path(dataset), *([Path(weights)] if weights else [])], outputs=[metrics], after="finetune_evaluation"))
        m = json.loads(metrics.read_text())["metrics"]
        row.update({"status": "ok", "dice": m["mean_dice"]["mean"], "dice_per_class": m["mean_dice"].get("per_class"), "hd95": m["hd95"]["mean"], "nsd": m["nsd"]["mean"],
                    "empty_predictions": m.get("empty_predictions", {}).get("total"),
                    "train_seconds": stage.record()["seconds"], "initial_weights": weights, **provenance, "stopping": stopping_rule(patience, warmup, steps),
                    "steps": TrainingSummary.read_steps(folder / "run"), "pretrain_steps": TrainingSummary.read_steps(Path(weights).parent) if weights else 0,
                    "labeled_ids": str(folder / "run" / "labeled_ids.json"), "masks_dir": str(metrics.parent / "overlays")})
        write_json(folder / RESULT_FILE, row)
        return row

    def run(self) -> list[dict[str, Any]]:
        """Run every cell (pre-training stages are shared and run once); returns the result rows."""
        self.root.mkdir(parents=True, exist_ok=True)
        pin_bundle_configs()  # a long run keeps the configs it started with
        with (self.root / "experiments.jsonl").open("a") as log:
            spec = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.spec).items()}
            spec["datasets"] = [str(d) for d in self.spec.datasets]
            log.write(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "spec": spec, "scale": asdict(self.p),
                                  "versions": package_versions()}) + "\n")
        # seed by seed, every method of a seed together: an interrupted run leaves complete pairs for the statistics
        cells = [(Path(d), m, n, s) for d in self.spec.datasets for n in self.spec.num_labeled for s in self.spec.seeds for m in self.spec.methods]
        rows = []
        for i, (dataset, method, num_labeled, seed) in enumerate(cells, 1):
            row = self.finetune(dataset, method, num_labeled, seed)
            rows.append(row)
            result = f"test Dice {row['dice']:.3f}" if row.get("status") == "ok" else row.get("status", "")
            print(progress(i, len(cells), f"{dataset.name} {method} n{num_labeled} s{seed}: {result}"), flush=True)
        return rows


def collect_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``result.json`` under ``run_dir`` (cells of all experiments written there), sorted."""
    rows = [json.loads(p.read_text()) for p in Path(run_dir).rglob(RESULT_FILE)]
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(rows, key=lambda r: (r["dataset"], r.get("variant", ""), order.get(r["method"], 99), r["num_labeled"], r["seed"]))
