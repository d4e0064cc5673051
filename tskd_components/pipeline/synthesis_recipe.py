"""``tskd synthesis``: diffusion recipes for one target, each a resumable stage with its quality report, side by side.

Arms (each trains ``bundles/tskd_synthesis`` and ends with its quality report against the target's training images):

- ``today``: the recipe before issue 16, the target's training images only for ``today_epochs`` epochs with the
  objective of then (epsilon prediction, plain MSE; the other arms take the bundle's, v-prediction with Min-SNR-5);
- ``target_long``: the target only, for the whole step budget (``pool_steps + target_steps``): more steps and EMA;
- ``pool_then_target``: ``pool_steps`` on the pool of other datasets' training images (the foundation stand-in's
  pool; the target is refused there, test splits are never read), then ``target_steps`` on the target from those
  weights;
- ``colour_pool_then_target``: the same, but each pool image first takes the colour statistics of one of the
  target's training images (:mod:`tskd_components.synthesis.colour`), so the pool model already draws the target's
  colours.

Each arm's samples are also reported after :func:`~tskd_components.synthesis.colour.match_target_statistics` (each
sample takes the channel statistics of one of the target's training images), as a transfer set built with
``match_samples`` holds them: a row ``<arm>, matched samples`` from a stage of its own (``<arm>/matched_samples``).

``recipe.md`` and ``recipe.json`` in ``<run_dir>/<target>/`` compare the arms' metrics (Fréchet distance and k-NN
precision / recall on the stand-in's features and on random ResNet-18 features, classifier two-sample accuracy,
memorisation share) and training seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..synthesis.diffusion import synthesis_datalist
from ..synthesis.quality import standin_record
from ..utils.io import write_json
from .stages import BUNDLE_CONFIGS, LEGACY_DEFAULTS, Stage, configs_dir, pin_bundle_configs

ARMS = ("today", "target_long", "pool_then_target", "colour_pool_then_target")
# optimizer steps of the recipe per preset (pool, target); image size, batch and network: the preset's bundle configs.
# cpu: 2200 steps of batch 16 at 64 px, 1.63 s each on 2 CPU threads (`python benchmarks/synthesis.py --sizes 64
# --batch-size 16`, 2026-11-27), the 60-minute budget on 2 cores. gpu (gpu.json: 128 px, a wider and deeper
# UNet, batch 32): ~14x the images seen; not yet timed on a GPU, so its budget is a choice, not a measurement
PRESET_STEPS = {"cpu": (1400, 800), "gpu": (10000, 5000)}
MATCHED = "matched_samples"  # an arm's sub-folder: the report of its samples matched to the target's statistics
REPORTED = ("standin_fid", "standin_fid_floor", "standin_precision", "standin_recall", "standin_two_sample_accuracy", "standin_two_sample_ci95", "fid", "precision", "recall",
            "two_sample_accuracy", "memorised_share")


def flat_quality(quality: dict) -> dict:
    """The :data:`REPORTED` numbers of a ``quality.json`` (``None`` where it has no stand-in features)."""
    standin = quality.get("standin", {})
    sha = standin.get("sha256") or ("unrecorded" if standin else None)  # reports before 2026-11-29 do not name it
    return {"standin": sha[:12] if sha else None, **{k: quality[k] for k in ("fid", "precision", "recall", "two_sample_accuracy")},
            **{f"standin_{k}": standin.get(k) for k in ("fid", "fid_floor", "precision", "recall", "two_sample_accuracy", "two_sample_ci95")},
            "memorised_share": quality["memorisation"]["share_copied"]}


@dataclass
class SynthesisRecipe:
    """Settings of ``tskd synthesis`` (see the module docstring)."""

    run_dir: Path
    target: Path
    pool: Sequence[Path]
    pool_steps: int | None = None  # None: the preset's (PRESET_STEPS)
    target_steps: int | None = None
    today_epochs: int = 25
    image_size: int | None = None  # None: the preset's bundle configs'
    batch_size: int | None = None
    standin_checkpoint: str = ""
    report_samples: int = 64
    ddim_steps: int = 50
    ddim_eta: float | None = None  # DDIM step noise of every report (0: deterministic; 1: ancestral); None: the bundle's
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)  # further settings of the bundle (e.g. block_out_channels)
    arms: Sequence[str] = ARMS  # the arms this process runs (two processes can share a run folder, one arm set each)
    preset: str = "cpu"  # "gpu": the bundle's gpu.json overlay and the GPU schedule
    match_samples: bool = True  # each arm run also reports its samples after matching their statistics to the target's

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown synthesis arms {unknown}; choose from {list(ARMS)}")
        if self.preset not in PRESET_STEPS:
            raise ValueError(f"unknown synthesis preset {self.preset!r}; choose from {list(PRESET_STEPS)}")
        if self.standin_checkpoint:
            standin_record(self.standin_checkpoint)  # fail now, not after an hour of training
        config: dict[str, Any] = {}
        for name in BUNDLE_CONFIGS[self.task][1]:
            config.update(json.loads((configs_dir("tskd_synthesis") / name).read_text()))
        self.image_size, self.batch_size = self.image_size or config["image_size"], self.batch_size or config["batch_size"]
        self.pool_steps = self.pool_steps or PRESET_STEPS[self.preset][0]
        self.target_steps = self.target_steps or PRESET_STEPS[self.preset][1]

    @property
    def task(self) -> str:
        """The stage task (bundle configs) of the preset."""
        return "synthesis" if self.preset == "cpu" else f"synthesis_{self.preset}"

    def _sampler(self) -> dict[str, float]:
        """The bundle overrides of the reports' sampler beyond ``ddim_steps`` (none: the bundle's defaults)."""
        return {} if self.ddim_eta is None else {"ddim_eta": self.ddim_eta}

    def _epochs(self, steps: int, pool: Sequence[Path] = ()) -> int:
        per_epoch = math.ceil(len(synthesis_datalist(self.target, pool)) / self.batch_size)
        return max(1, math.ceil(steps / per_epoch))

    def _stage(self, arm: str, epochs: int, pool: Sequence[Path] = (), initial: Path | None = None, **settings: Any) -> Path:
        from ..synthesis import UNET_WEIGHTS

        folder = Path(self.run_dir).resolve() / self.target.name / arm
        overrides = {"dataset_dir": str(self.target.resolve()), "pool": [str(p.resolve()) for p in pool], "image_size": self.image_size,
                     "batch_size": self.batch_size, "max_epochs": epochs, "seed": self.seed, "output_dir": str(folder / "run"),
                     "model_dir": str(folder / "run" / "model"), "standin_checkpoint": self.standin_checkpoint,
                     "report_samples": self.report_samples, "grid_count": 16, "ddim_steps": self.ddim_steps,
                     **self._sampler(), "initial_weights": str(initial) if initial else "", **self.overrides, **settings}  # an arm's own settings win
        inputs = [self.target, *pool] + ([initial / UNET_WEIGHTS] if initial else [])
        Stage("synthesis", f"synthesis {self.target.name} {arm} ({epochs} epochs)", folder, self.task, overrides, inputs=inputs,
              outputs=[folder / "run" / "model" / UNET_WEIGHTS, folder / "run" / "quality" / "quality.json"]).run()
        return folder

    def _matched_report(self, arm: str) -> None:
        """The quality report of ``arm``'s model with its samples matched to the target's channel statistics."""
        from ..synthesis import UNET_WEIGHTS

        model = Path(self.run_dir).resolve() / self.target.name / arm / "run" / "model"
        folder = model.parents[1] / MATCHED
        overrides = {"dataset_dir": str(self.target.resolve()), "model_dir": str(model), "output_dir": str(folder / "run"),
                     "standin_checkpoint": self.standin_checkpoint, "report_samples": self.report_samples, "grid_count": 16,
                     "ddim_steps": self.ddim_steps, **self._sampler(), "seed": self.seed, "match_samples": True}
        Stage("synthesis report", f"synthesis {self.target.name} {arm}, matched samples", folder, "synthesis_report", overrides,
              inputs=[model / UNET_WEIGHTS], outputs=[folder / "quality" / "quality.json"]).run()

    def run(self) -> Path:
        """Run the ``arms`` (done stages are skipped) and write the comparison of every arm finished so far (by this
        process or another one working on other arms of the same run folder); returns ``recipe.md``."""
        pin_bundle_configs()
        out = Path(self.run_dir).resolve() / self.target.name
        if "today" in self.arms:
            self._stage("today", self.today_epochs, **LEGACY_DEFAULTS[self.task])
        if "target_long" in self.arms:
            self._stage("target_long", self._epochs(self.pool_steps + self.target_steps))
        pool = out / "pool"
        if "pool_then_target" in self.arms:
            self._stage("pool", self._epochs(self.pool_steps, self.pool), pool=self.pool)
            self._stage("pool_then_target", self._epochs(self.target_steps), initial=pool / "run" / "model")
        colour_pool = out / "pool_colour"
        if "colour_pool_then_target" in self.arms:
            self._stage("pool_colour", self._epochs(self.pool_steps, self.pool), pool=self.pool, colour_match=True)
            self._stage("colour_pool_then_target", self._epochs(self.target_steps), initial=colour_pool / "run" / "model")
        if self.match_samples:
            for arm in [a for a in ARMS if a in self.arms]:
                self._matched_report(arm)
        folders = {arm: out / arm for arm in ARMS if (out / arm / "stage.json").is_file()}
        rows = {}
        for arm, folder in folders.items():
            pretraining = {"pool_then_target": [pool], "colour_pool_then_target": [colour_pool]}.get(arm, [])
            seconds = sum(json.loads((f / "stage.json").read_text())["seconds"] for f in [*pretraining, folder])
            trained = {"epochs": json.loads((folder / "stage.json").read_text())["overrides"]["max_epochs"], "train_seconds": seconds}
            rows[arm] = {**trained, **flat_quality(json.loads((folder / "run" / "quality" / "quality.json").read_text()))}
            if (folder / MATCHED / "stage.json").is_file():
                rows[f"{arm}, matched samples"] = {**trained, **flat_quality(json.loads((folder / MATCHED / "quality" / "quality.json").read_text()))}
        write_json(out / "recipe.json", {"target": self.target.name, "pool": [p.name for p in self.pool], "arms": rows})
        return write_markdown(out / "recipe.md", self.target.name, [p.name for p in self.pool], rows)


def cell(value: Any) -> str:
    """A recipe.md table cell: floats to 3 decimals, an interval as [low, high], ``None`` as n/a."""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
    return "n/a" if value is None else str(value)


def write_markdown(path: Path, target: str, pool: Sequence[str], rows: dict[str, dict]) -> Path:
    columns = ["epochs", "train_seconds", "standin", *REPORTED]
    lines = [f"# Synthesis recipes for {target} (pool: {', '.join(pool)})", "",
             "Metrics of each arm's samples against the target's training images (`quality/quality.json` of each run); "
             "`standin_*` on the foundation stand-in's image-encoder features (`standin`: its SHA-256; compare those "
             "columns only between rows of one stand-in), the others on random ResNet-18 features; `standin_fid_floor`: the "
             "distance between two halves of the training images, what real images would score (empty in reports before it existed). "
             "Two-sample accuracy 0.5 = indistinguishable (`_ci95`: its Wilson interval over the held-out images); `memorised_share` = synthetic images above 0.8 SSIM to their "
             "nearest training image. `*pool_then_target` seconds include the pool pre-training. `<arm>, matched samples`: the same "
             "model's samples, each given the channel means / stds of one training image (training cost unchanged).", "",
             "| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for arm, row in rows.items():
        cells = [cell(row[c]) for c in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    missing = [arm for arm in ARMS if arm not in rows]
    lines += ["", f"Not finished yet: {', '.join(missing)}."] if missing else []
    path.write_text("\n".join(lines) + "\n")
    return path
