"""The handler chains every TSKD trainer shares, written once: resume, run record, LR schedule, validation,
NaN guard, atomic checkpoints, logs, curves and a progress bar. Bundle configs list the training chain as one
``_target_`` block with named arguments, ``"handlers": [{"_target_": "tskd_components.engines.TrainingHandlers",
"ckpt_dir": ...}]``, and the validation chain as ``{"_target_": "tskd_components.engines.validation_handlers", ...}``."""

from __future__ import annotations

from typing import Any, Mapping

from ignite.engine import Engine
from monai.handlers import LrScheduleHandler, StatsHandler, TensorBoardStatsHandler, ValidationHandler

from .checkpoint import AtomicCheckpointSaver
from .handlers import (EarlyStopping, LossProgressBar, NaNGuard, ResumeFromCheckpoint, RunRecorder, StepLimit, TrainingCurves,
                       TrainingSummary, ValidationSchedule, first_loss)


def training_handlers(
    ckpt_dir: str,
    output_dir: str,
    run_params: Mapping[str, Any],
    checkpoint: Mapping[str, Any],
    lr_scheduler: Any = None,
    resume: bool = True,
    evaluator: Engine | None = None,
    val_interval: int = 1,
    patience: int = 0,
    patience_start_epoch: int = 0,
    final_model: bool = False,
    tag_name: str = "train_loss",
    checkpoint_every_s: float = 60.0,
    max_steps: int = 0,
) -> list:
    """Handlers of a trainer, in the order they fire.

    Args:
        ckpt_dir: where interval checkpoints (and ``model.pt`` without validation) are written and resumed from.
        output_dir: run record, TensorBoard events, ``training_log.csv`` and ``training_curves.png``.
        run_params: the run's settings: recorded, and the signature a resumed checkpoint must match.
        checkpoint: objects saved in and restored from checkpoints, ``{"model": ..., "optimizer": ..., ...}``; the
            ``lr_scheduler`` is added to it when given. ``checkpoint["model"]`` is what ``model.pt`` holds.
        lr_scheduler: stepped every iteration.
        resume: continue from the newest interval checkpoint in ``ckpt_dir`` if there is one.
        evaluator: validation engine run every ``val_interval`` epochs (it saves the best ``model.pt``, see
            :func:`validation_handlers`).
        patience: with an evaluator, stop after this many validations without improvement (0: run to ``max_epochs``).
        patience_start_epoch: validations up to this trainer epoch are a warm-up the patience ignores.
        final_model: without an evaluator, write ``checkpoint["model"]`` as ``model.pt`` when training completes.
        tag_name: TensorBoard name of the loss.
        checkpoint_every_s: interval checkpoints at most this often (seconds; the last epoch is always saved).
        max_steps: end training after this many optimizer steps, mid-epoch if need be (0: run to ``max_epochs``).
    """
    state = dict(checkpoint) | ({"lr_scheduler": lr_scheduler} if lr_scheduler is not None else {})
    handlers: list = [
        ResumeFromCheckpoint(ckpt_dir=ckpt_dir, load_dict=state, enabled=resume, signature=run_params),
        # the network's class beside the settings: a run whose network_def overrides the student (the UNet reference) says so
        RunRecorder(output_dir=output_dir, config={"network": f"{type(state['model']).__module__}.{type(state['model']).__qualname__}", **run_params}),
    ]
    if lr_scheduler is not None:
        handlers.append(LrScheduleHandler(lr_scheduler=lr_scheduler, epoch_level=False, print_lr=False))
    if evaluator is not None:
        handlers += [ValidationSchedule(val_interval), ValidationHandler(validator=evaluator, epoch_level=True, interval=val_interval),
                     EarlyStopping(evaluator, patience, start_epoch=patience_start_epoch)]
    handlers += [
        StepLimit(max_steps),
        NaNGuard(ckpt_dir=ckpt_dir),
        AtomicCheckpointSaver(save_dir=ckpt_dir, save_dict=state, save_engine_as="trainer", save_interval=1, n_saved=1, epoch_level=True,
                              min_seconds=checkpoint_every_s),
    ]
    if evaluator is None and final_model:
        handlers.append(AtomicCheckpointSaver(save_dir=ckpt_dir, save_dict={"model": checkpoint["model"]}, save_final=True,
                                              final_filename="model.pt"))
    handlers += [
        StatsHandler(iteration_log=False),
        TensorBoardStatsHandler(log_dir=output_dir, tag_name=tag_name, output_transform=first_loss),
        TrainingCurves(output_dir=output_dir, evaluator=evaluator, optimizer=state.get("optimizer")),
        LossProgressBar(persist=True),
        TrainingSummary(output_dir=output_dir),
    ]
    return handlers


class TrainingHandlers:
    """:func:`training_handlers` as one handler: ``attach`` attaches the chain in its order. A bundle's
    ``train#handlers`` is then a list of ``_target_`` blocks, which MONAI Label's BundleTrainTask (it puts its
    CheckpointLoader first) and the zoo's workflow property checks expect.

    Args:
        rank: the process's rank under DDP; every rank > 0 keeps only what each process must run (resume, LR
            schedule, validation and its schedule, early stopping, step limit, NaN guard); rank 0 also writes checkpoints, logs,
            curves and the progress bar.
        kwargs: the arguments of :func:`training_handlers`.
    """

    EVERY_RANK = (ResumeFromCheckpoint, LrScheduleHandler, ValidationSchedule, ValidationHandler, EarlyStopping, StepLimit, NaNGuard)

    def __init__(self, rank: int = 0, **kwargs: Any) -> None:
        chain = training_handlers(**kwargs)
        self.handlers = chain if rank == 0 else [h for h in chain if isinstance(h, self.EVERY_RANK)]

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)


def validation_handlers(ckpt_dir: str, output_dir: str, model: Any) -> list:
    """Handlers of a validation evaluator: metric logs and the best-so-far ``model.pt`` (by the key metric)."""
    return [
        StatsHandler(iteration_log=False),
        TensorBoardStatsHandler(log_dir=output_dir, iteration_log=False),
        AtomicCheckpointSaver(save_dir=ckpt_dir, save_dict={"model": model}, save_key_metric=True, key_metric_filename="model.pt"),
    ]
