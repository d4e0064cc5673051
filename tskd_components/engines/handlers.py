"""Ignite handlers that MONAI does not provide: atomic resumable checkpoints, a NaN guard, early stopping on the
validation metric, run records and summaries, training curves (CSV + PNG)."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar, TerminateOnNan
from monai.handlers import CheckpointLoader, EarlyStopHandler
from torch.optim.lr_scheduler import CosineAnnealingLR

from ..utils.io import write_json
from ..utils.run_record import write_run_record
from .checkpoint import latest_checkpoint

logger = logging.getLogger(__name__)



class ResumeFromCheckpoint:
    """Resume training from the latest interval checkpoint in ``ckpt_dir``: the objects of ``load_dict`` plus the
    engine it is attached to (under ``engine_key``). Does nothing when ``enabled`` is false or no checkpoint exists.

    With ``signature`` (the run's settings), a checkpoint left by a run with other settings (another dataset,
    label budget, seed, ...; ``max_epochs``, ``max_steps`` and output locations may change) is refused instead of
    silently continued.

    A changed ``max_epochs`` changes a cosine schedule's length (``CosineAnnealingLR.T_max``, built from the new
    settings): the restored scheduler takes the new length and the learning rate continues on the new cosine from
    the restored step, so it keeps falling to its minimum instead of climbing back to its peak after the old end.
    """

    SIGNATURE = "resume_signature.json"
    MAY_CHANGE = ("max_epochs", "max_steps", "val_interval", "output_dir", "ckpt_dir", "model_dir", "export_path")  # length and location

    def __init__(self, ckpt_dir: str, load_dict: dict, enabled: bool = True, prefix: str = "checkpoint", engine_key: str = "trainer",
                 signature: Mapping[str, Any] | None = None) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.path = latest_checkpoint(ckpt_dir, prefix) if enabled else None
        self.load_dict = load_dict
        self.engine_key = engine_key
        self.lengths = {k: v.T_max for k, v in load_dict.items() if isinstance(v, CosineAnnealingLR)}  # as configured now
        self.signature = {k: v for k, v in json.loads(json.dumps(dict(signature or {}), default=str)).items() if k not in self.MAY_CHANGE}
        saved = self.ckpt_dir / self.SIGNATURE
        if self.path is not None and signature is not None and saved.is_file():
            previous = json.loads(saved.read_text())
            changed = sorted(k for k in set(previous) | set(self.signature) if previous.get(k) != self.signature.get(k))
            if changed:
                details = "; ".join(f"{k}: {previous.get(k)!r} -> {self.signature.get(k)!r}" for k in changed[:5])
                raise ValueError(f"{self.path} belongs to a run with other settings ({details}); pass --resume false to start over, or another ckpt_dir")

    def attach(self, engine: Engine) -> None:
        if self.signature:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.ckpt_dir / self.SIGNATURE, self.signature)
        if self.path is not None:
            logger.info(f"resuming from {self.path}")
            load_dict = {**self.load_dict, self.engine_key: engine}
            CheckpointLoader(load_path=str(self.path), load_dict=load_dict, map_location="cpu").attach(engine)
            engine.add_event_handler(Events.STARTED, self.rescale_schedules)  # after the loader, which also runs on STARTED

    def rescale_schedules(self, engine: Engine) -> None:
        for key, length in self.lengths.items():
            schedule = self.load_dict[key]
            if schedule.T_max == length:
                continue
            logger.info(f"{key}: cosine length {schedule.T_max} -> {length} steps (max_epochs or max_steps changed), continuing from step {schedule.last_epoch}")
            schedule.T_max = length
            step = min(schedule.last_epoch, length)
            for group, base in zip(schedule.optimizer.param_groups, schedule.base_lrs):
                group["lr"] = schedule.eta_min + (base - schedule.eta_min) * (1 + math.cos(math.pi * step / length)) / 2
            schedule._last_lr = [group["lr"] for group in schedule.optimizer.param_groups]


def first_loss(output: Any) -> Any:
    """The loss of an engine output (a decollated list of dicts, or one dict)."""
    return output[0]["loss"] if isinstance(output, list) else output["loss"]


def scalar_outputs(output: Any) -> dict[str, float]:
    """Every scalar of a dict output (a loss and its parts), or the loss of a decollated list output."""
    if isinstance(output, list):
        return {"loss": float(first_loss(output))}
    return {k: float(v) for k, v in output.items() if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)}


class LossProgressBar(ProgressBar):
    """ignite's tqdm progress bar showing the running loss; attachable by MONAI engines (``attach(engine)``)."""

    def attach(self, engine: Engine, *args: Any, **kwargs: Any) -> None:
        super().attach(engine, output_transform=lambda out: {"loss": float(first_loss(out))})


class NaNGuard(TerminateOnNan):
    """Ignite's ``TerminateOnNan`` that fails the run with a clear message (instead of ending it quietly, which
    would leave a half-trained model looking finished) when the loss stops being finite."""

    def __init__(self, ckpt_dir: str | None = None, output_transform=first_loss) -> None:
        super().__init__(output_transform=output_transform)
        self.ckpt_dir = ckpt_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        already_stopping = engine.should_terminate  # another handler's stop is not a NaN
        super().__call__(engine)
        if engine.should_terminate and not already_stopping:
            last = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir else None
            raise FloatingPointError(
                f"loss became {float(self._output_transform(engine.state.output))} at epoch {engine.state.epoch}, iteration "
                f"{engine.state.iteration}; lower the learning rate or check the inputs for NaN/Inf"
                + (f"; the last good checkpoint is {last} (training resumes from it)" if last else "")
            )


class StepLimit:
    """End training after ``max_steps`` optimizer steps, mid-epoch if need be (``max_epochs`` stays the cap; 0: no
    limit), so that runs over sets of different sizes can take the same number of steps, not whole epochs. Ignite's
    ``terminate`` still fires ``COMPLETED``: the final model, curves and summary are written as after the last epoch. The
    trainer's iteration count is part of its checkpoints, so a resumed run stops at the same step."""

    def __init__(self, max_steps: int = 0) -> None:
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0: no limit), got {max_steps}")
        self.max_steps = max_steps

    def attach(self, engine: Engine) -> None:
        if self.max_steps:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration >= self.max_steps:
            engine.terminate()


class EarlyStopping:
    """Stop training once the validation key metric has not improved for ``patience`` validations (MONAI's
    ``EarlyStopHandler`` on the evaluator); ``max_epochs`` stays the cap. ``patience`` 0 turns it off.

    Validations up to trainer epoch ``start_epoch`` are a warm-up (Keras' ``start_from_epoch``): they neither count
    towards the patience nor set the score it must beat, so a net whose validation Dice peaks by chance in its
    first steps and dips while it learns the background first is not stopped on that peak. The warm-up is read
    from the trainer's epoch, so a resumed run keeps it. The best checkpoint is chosen over every validation.
    """

    def __init__(self, evaluator: Engine, patience: int, start_epoch: int = 0, min_delta: float = 0.0) -> None:
        self.evaluator, self.patience, self.start_epoch, self.min_delta = evaluator, patience, start_epoch, min_delta

    def attach(self, trainer: Engine) -> None:
        if self.patience > 0:
            handler = EarlyStopHandler(patience=self.patience, score_function=lambda e: e.state.metrics[e.state.key_metric_name],
                                       trainer=trainer, min_delta=self.min_delta, epoch_level=True)
            after_warmup = Events.EPOCH_COMPLETED(event_filter=lambda *_: trainer.state.epoch > self.start_epoch)
            self.evaluator.add_event_handler(after_warmup, handler)


class ValidationSchedule:
    """Refuse, when training starts, a validation interval longer than the run: no validation would happen, so no
    best ``model.pt`` would be written, and the run would end "successfully" with nothing to use."""

    def __init__(self, interval: int) -> None:
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.interval > engine.state.max_epochs:
            raise ValueError(f"val_interval ({self.interval}) is larger than max_epochs ({engine.state.max_epochs}): no validation "
                             "would run and no model.pt be saved; lower val_interval or raise max_epochs")


class TrainingSummary:
    """Write ``training_summary.json`` (optimizer steps, epochs, whether training stopped before ``max_epochs``)
    into ``output_dir`` when training completes: what fair comparisons count."""

    FILE = "training_summary.json"

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        write_json(self.output_dir / self.FILE, {"steps": engine.state.iteration, "epochs": engine.state.epoch,
                                                 "max_epochs": engine.state.max_epochs,
                                                 "stopped_early": engine.state.epoch < engine.state.max_epochs})

    @classmethod
    def read_steps(cls, output_dir: str | Path) -> int | None:
        """Optimizer steps a training run took (``None`` for runs that predate the summary)."""
        summary = Path(output_dir) / cls.FILE
        return json.loads(summary.read_text())["steps"] if summary.is_file() else None


class RunRecorder:
    """Write ``config.resolved.json`` and ``versions.json`` into ``output_dir`` when the run starts."""

    def __init__(self, output_dir: str, config: Mapping[str, Any]) -> None:
        self.output_dir = output_dir
        self.config = config

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: write_run_record(self.output_dir, self.config))


class TrainingCurves:
    """Append per-epoch means of the loss (and its parts, for dict outputs), the learning rate and validation
    metrics to ``training_log.csv`` in ``output_dir`` (an epoch a step limit ends early gets its row too), and
    redraw ``training_curves.png`` every ``plot_every`` epochs and when the run completes (a redraw costs ~0.2 s, a
    tenth of a small epoch). Attach to the trainer; pass the validation evaluator to log its metrics too."""

    def __init__(self, output_dir: str, evaluator: Engine | None = None, optimizer: torch.optim.Optimizer | None = None,
                 plot_every: int = 10) -> None:
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.plot_every = plot_every
        self._sums: dict[str, list[float]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._sums.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)
        engine.add_event_handler(Events.TERMINATE, self._write_partial)  # a step limit's last epoch ends mid-way
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.plot_every), self._plot)
        engine.add_event_handler(Events.COMPLETED, self._plot)

    def _plot(self, engine: Engine) -> None:
        log = self.output_dir / "training_log.csv"
        if log.is_file():
            plot_training_curves(log, self.output_dir / "training_curves.png")

    def _collect(self, engine: Engine) -> None:
        for name, value in scalar_outputs(engine.state.output).items():
            self._sums.setdefault(name, []).append(value)

    def _write_partial(self, engine: Engine) -> None:
        if self._sums:  # steps since the last row: an epoch that a stop ended before it completed
            self._write(engine)

    def _write(self, engine: Engine) -> None:
        row: dict[str, Any] = {"epoch": engine.state.epoch} | {k: sum(v) / len(v) for k, v in self._sums.items()}
        self._sums.clear()
        for name, value in (engine.state.metrics or {}).items():
            if isinstance(value, (int, float)):
                row[name] = value
        if self.optimizer is not None:
            row["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.evaluator is not None and self.evaluator.state.epoch:
            for name, value in self.evaluator.state.metrics.items():
                if isinstance(value, (int, float)):
                    row[name] = value
        self.output_dir.mkdir(parents=True, exist_ok=True)
        log = self.output_dir / "training_log.csv"
        rows = list(csv.DictReader(log.open())) if log.exists() else []
        rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [{k: str(v) for k, v in row.items()}]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with log.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def plot_training_curves(log_csv: str | Path, png: str | Path) -> Path:
    """One panel per logged quantity (loss, lr, each validation metric) against epoch, drawn with MONAI's
    ``plot_metric_graph`` (value at the last epoch in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from monai.utils.jupyter_utils import plot_metric_graph

    rows = list(csv.DictReader(Path(log_csv).open()))
    keys = [k for k in rows[0] if k != "epoch"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        log_scale = key == "lr" and all(v > 0 for _, v in points)
        plot_metric_graph(ax, key, {key: points}, yscale="log" if log_scale else "linear", avg_keys=())
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
