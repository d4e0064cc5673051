import csv
import json
import math
import os
import time

import pytest
import torch
from ignite.engine import Engine, Events

from tskd_components.engines import (AtomicCheckpointSaver, EarlyStopping, MetricsReport, NaNGuard, ResumeFromCheckpoint, StepLimit, TrainingCurves,
                                    TrainingSummary, latest_checkpoint)


def make_trainer(model, optimizer, losses):
    def step(engine, batch):
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean() * losses.get(engine.state.iteration, 1.0)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    return Engine(step)


def checkpointed_trainer(tmp_path):
    """Two batches of data, a linear model, its SGD optimizer, a trainer and an interval checkpoint saver (not attached)."""
    torch.manual_seed(0)
    data = [torch.randn(4, 3) for _ in range(2)]
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, opt, {})
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": model, "optimizer": opt}, save_engine_as="trainer", save_interval=1, n_saved=1)
    return data, model, opt, trainer, saver


def test_atomic_checkpoints_resume_and_prune(tmp_path):
    data, model, opt, trainer, saver = checkpointed_trainer(tmp_path)
    saver.attach(trainer)
    trainer.run(data, max_epochs=2)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=2.pt"]  # no temp files left, n_saved=1
    weights_after_2 = model.weight.detach().clone()

    model2 = torch.nn.Linear(3, 1)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    trainer2 = make_trainer(model2, opt2, {})
    resume = ResumeFromCheckpoint(str(tmp_path), {"model": model2, "optimizer": opt2})
    assert resume.path == latest_checkpoint(tmp_path)
    resume.attach(trainer2)
    AtomicCheckpointSaver(str(tmp_path), {"model": model2, "optimizer": opt2}, save_engine_as="trainer", save_interval=1, n_saved=1).attach(trainer2)
    seen = []
    trainer2.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    trainer2.add_event_handler(Events.STARTED, lambda e: seen.append(torch.equal(model2.weight, weights_after_2)))
    trainer2.run(data, max_epochs=3)
    assert seen == [True, 3]  # restored weights, then only epoch 3 ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=3.pt"]


def test_a_kill_between_writing_the_new_checkpoint_and_removing_the_old_loses_nothing(tmp_path, monkeypatch):
    data, model, opt, trainer, saver = checkpointed_trainer(tmp_path)
    pruned = []

    def killed_after_the_write(engine):  # epoch 2's checkpoint is written, then the process dies before pruning
        if engine.state.epoch == 2:
            raise KeyboardInterrupt
        pruned.append(engine.state.epoch)

    monkeypatch.setattr(saver, "_prune", killed_after_the_write)
    (tmp_path / "tmpab12cd34").write_bytes(b"")  # a half-written temp file of an earlier kill: removed on attach
    os.utime(tmp_path / "tmpab12cd34", (time.time() - 3600, time.time() - 3600))
    (tmp_path / ".resume_signature.json.x1y2.tmp").write_bytes(b"{")  # another process writing right now (DDP rank 1): kept
    saver.attach(trainer)
    assert not (tmp_path / "tmpab12cd34").exists() and (tmp_path / ".resume_signature.json.x1y2.tmp").exists()
    (tmp_path / ".resume_signature.json.x1y2.tmp").unlink()  # its writer renames it away
    with pytest.raises(KeyboardInterrupt):
        trainer.run(data, max_epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=2.pt"  # the re-run resumes from the newest epoch
    rerun = make_trainer(model, opt, {})
    ResumeFromCheckpoint(str(tmp_path), {"model": model, "optimizer": opt}).attach(rerun)
    AtomicCheckpointSaver(str(tmp_path), {"model": model, "optimizer": opt}, save_engine_as="trainer", save_interval=1, n_saved=1).attach(rerun)
    epochs = []
    rerun.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    rerun.run(data, max_epochs=3)
    assert epochs == [3] and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=3.pt"]


def test_best_model_is_replaced_in_place_never_deleted_first(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 1)
    evaluator = Engine(lambda e, b: None)
    scores = iter([0.5, 0.7])
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"dice": next(scores)}))
    evaluator.state.key_metric_name = "dice"
    AtomicCheckpointSaver(str(tmp_path), {"model": model}, save_key_metric=True, key_metric_name="dice",
                          key_metric_filename="model.pt").attach(evaluator)
    removed = []
    monkeypatch.setattr("pathlib.Path.unlink", lambda self, missing_ok=False: removed.append(self.name))
    evaluator.run([0], max_epochs=1)
    evaluator.run([0], max_epochs=2)
    assert (tmp_path / "model.pt").is_file() and "model.pt" not in removed


def test_resume_disabled_or_empty_dir(tmp_path):
    assert ResumeFromCheckpoint(str(tmp_path), {}).path is None
    (tmp_path / "checkpoint_epoch=4.pt").write_bytes(b"")
    assert ResumeFromCheckpoint(str(tmp_path), {}, enabled=False).path is None


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, opt, {2: float("nan")})
    AtomicCheckpointSaver(str(tmp_path), {"model": model, "optimizer": opt}, save_interval=1).attach(trainer)
    NaNGuard(ckpt_dir=str(tmp_path)).attach(trainer)
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 2, iteration 2; lower the learning rate.*checkpoint_epoch=1.pt"):
        trainer.run([torch.randn(2, 3)], max_epochs=3)


def test_a_step_limit_ends_mid_epoch_and_a_resumed_run_ends_at_the_same_step(tmp_path):
    def run(max_epochs, resume):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = make_trainer(model, opt, {})
        state = {"model": model, "optimizer": opt}
        ResumeFromCheckpoint(str(tmp_path / "ckpt"), state, enabled=resume).attach(trainer)
        StepLimit(10).attach(trainer)
        AtomicCheckpointSaver(str(tmp_path / "ckpt"), state, save_engine_as="trainer", save_interval=1, n_saved=1).attach(trainer)
        TrainingSummary(str(tmp_path)).attach(trainer)
        trainer.run([torch.randn(2, 3) for _ in range(4)], max_epochs=max_epochs)  # 4 steps per epoch
        return json.loads((tmp_path / TrainingSummary.FILE).read_text())

    assert run(2, resume=False) == {"steps": 8, "epochs": 2, "max_epochs": 2, "stopped_early": False}  # epochs cap first
    # resumed from epoch 2's checkpoint with 3 epochs (12 steps) allowed: the limit ends epoch 3 after its 2nd step,
    # and the run still completes (the summary is written) without counting as stopped early
    assert run(3, resume=True) == {"steps": 10, "epochs": 3, "max_epochs": 3, "stopped_early": False}
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint_epoch=2.pt"]  # no checkpoint of a partial epoch
    StepLimit(0).attach(trainer := Engine(lambda e, b: None))  # 0: no limit, nothing attached
    assert not trainer.has_event_handler(StepLimit(0), Events.ITERATION_COMPLETED)
    trainer.run([0] * 3, max_epochs=2)
    assert trainer.state.iteration == 6
    with pytest.raises(ValueError, match="max_steps must be >= 0"):
        StepLimit(-1)


def test_training_curves_csv_and_png(tmp_path):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, opt, {})
    TrainingCurves(str(tmp_path), optimizer=opt).attach(trainer)
    trainer.run([torch.randn(4, 3)] * 3, max_epochs=4)
    rows = list(csv.DictReader((tmp_path / "training_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) and float(rows[0]["lr"]) == 0.1
    assert (tmp_path / "training_curves.png").stat().st_size > 5000


def test_metrics_report_per_class(tmp_path, capsys):
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"mean_dice": 0.5}
    engine.state.metric_details = {"mean_dice": torch.tensor([[1.0, 0.0], [0.5, float("nan")]])}
    engine.data_loader = type("Loader", (), {"dataset": [0, 1]})()
    report = MetricsReport(str(tmp_path), ["liver", "spleen"], extra={"split": "test"})(engine)
    assert report["metrics"]["mean_dice"]["per_class"] == {"liver": 0.75, "spleen": 0.0}
    assert report["metrics"]["mean_dice"]["mean"] == pytest.approx(0.5)
    assert json.loads((tmp_path / "metrics.json").read_text()) == report
    assert json.loads(capsys.readouterr().out)["split"] == "test"


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(b"")
    first = ResumeFromCheckpoint(str(tmp_path), {}, signature={"dataset_dir": "a", "seed": 0, "max_epochs": 5})
    first.attach(Engine(lambda e, b: None))  # writes the signature (loading would happen only when the engine starts)
    assert json.loads((tmp_path / "resume_signature.json").read_text()) == {"dataset_dir": "a", "seed": 0}
    assert ResumeFromCheckpoint(str(tmp_path), {}, signature={"dataset_dir": "a", "seed": 0, "max_epochs": 50}).path is not None
    with pytest.raises(ValueError, match=r"belongs to a run with other settings \(dataset_dir: 'a' -> 'b'\); pass --resume false"):
        ResumeFromCheckpoint(str(tmp_path), {}, signature={"dataset_dir": "b", "seed": 0, "max_epochs": 5})
    assert ResumeFromCheckpoint(str(tmp_path), {}, enabled=False, signature={"dataset_dir": "b"}).path is None


def _cosine_run(tmp_path, max_epochs, lrs):
    """A 2-batch run of ``max_epochs`` with a per-iteration cosine schedule, checkpointed and resumed in ``tmp_path``."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2 * max_epochs)
    trainer = make_trainer(model, opt, {})
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: schedule.step())
    state = {"model": model, "optimizer": opt, "lr_scheduler": schedule}
    ResumeFromCheckpoint(str(tmp_path), state).attach(trainer)
    AtomicCheckpointSaver(str(tmp_path), state, save_engine_as="trainer", save_interval=1, n_saved=1).attach(trainer)
    trainer.run([torch.randn(4, 3) for _ in range(2)], max_epochs=max_epochs)


def test_resume_with_more_epochs_continues_on_a_monotone_cosine(tmp_path):
    lrs = []
    _cosine_run(tmp_path, 2, lrs)
    _cosine_run(tmp_path, 4, lrs)  # resumed at step 4 of a schedule now 8 steps long
    assert len(lrs) == 8
    tail = lrs[4:]  # without the rescale the old 4-step cosine restarts: the rate climbs back to its peak after step 4
    assert all(a >= b for a, b in zip(tail, tail[1:])), lrs
    assert lrs[4] == pytest.approx(0.05 * (1 + math.cos(math.pi * 4 / 8)))  # on the new cosine at the restored step
    assert lrs[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * 7 / 8)))


def test_model_pt_keeps_the_best_score_across_runs(tmp_path):
    def validate(scores, model):
        evaluator = Engine(lambda e, b: None)
        it = iter(scores)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"dice": next(it)}))
        evaluator.state.key_metric_name = "dice"
        AtomicCheckpointSaver(str(tmp_path), {"model": model}, save_key_metric=True, key_metric_name="dice",
                              key_metric_filename="model.pt").attach(evaluator)
        evaluator.run([0], max_epochs=len(scores))

    good, worse, best = (torch.nn.Linear(3, 1) for _ in range(3))
    validate([0.49], good)
    validate([0.35], worse)  # a killed-and-resumed run validates a worse model first
    assert torch.equal(torch.load(tmp_path / "model.pt")["weight"], good.weight.detach())
    validate([0.30, 0.60], best)
    assert torch.equal(torch.load(tmp_path / "model.pt")["weight"], best.weight.detach())
    assert json.loads((tmp_path / "model.pt.best.json").read_text())["_saved"][0][0] == pytest.approx(0.60)


def test_interval_checkpoints_wait_min_seconds_but_the_last_epoch_is_saved(tmp_path):
    data, model, opt, trainer, _ = checkpointed_trainer(tmp_path)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": model, "optimizer": opt}, save_engine_as="trainer", save_interval=1,
                                  n_saved=1, min_seconds=3600)
    saver.attach(trainer)
    written = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: written.append(sorted(p.name for p in tmp_path.glob("checkpoint_*"))))
    trainer.run(data, max_epochs=3)
    assert written == [[], [], ["checkpoint_epoch=3.pt"]]


@pytest.mark.parametrize("start_epoch, stopped_at", [(0, 3), (3, 9)])
def test_early_stopping_ignores_the_warm_up_validations(start_epoch, stopped_at):
    # validation Dice peaks by chance at the first validation and dips while the net learns the background, then
    # climbs: without a warm-up patience 2 stops at epoch 3 on that peak; with validations up to epoch 3 ignored, the
    # bar is set at epoch 4 (0.0), 0.2 and 0.3 improve on it, and two validations without a gain stop at epoch 9
    scores = [0.04, 0.02, 0.01, 0.0, 0.0, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.ITERATION_COMPLETED)
    def score(engine):
        engine.state.key_metric_name = "val_mean_dice"
        engine.state.metrics["val_mean_dice"] = scores[trainer.state.epoch - 1]

    trainer = Engine(lambda engine, batch: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    EarlyStopping(evaluator, patience=2, start_epoch=start_epoch).attach(trainer)
    trainer.run([0], max_epochs=len(scores))
    assert trainer.state.epoch == stopped_at
