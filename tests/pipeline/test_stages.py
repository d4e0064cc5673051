"""Stage bookkeeping: signatures, skip when done, redo when inputs change."""

import json
import os
import shutil
from pathlib import Path

import pytest

from tskd_components.pipeline import stages
from tskd_components.pipeline.stages import Stage, input_digest


def test_signature_follows_overrides_and_input_contents(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    stage = Stage("k", "n", tmp_path / "s", "ts_kd", {"max_epochs": 2}, inputs=[weights])
    first = stage.signature()
    assert Stage("k", "n", tmp_path / "s", "ts_kd", {"max_epochs": 3}, inputs=[weights]).signature() != first
    weights.write_bytes(b"two")
    assert stage.signature() != first


def test_a_changed_bundle_default_redoes_only_the_stages_relying_on_it(tmp_path, monkeypatch):
    """tskd_synthesis 0.5.0 made v-prediction + Min-SNR-5 the default: a diffusion stage trained before (epsilon, plain
    MSE) keeps its signature whether it named that objective or relied on the old default; one relying on the new
    default is a new stage."""
    configs = tmp_path / "tskd_synthesis" / "configs"
    configs.mkdir(parents=True)
    monkeypatch.setattr(stages, "configs_dir", lambda name: tmp_path / name / "configs")

    def signature(**overrides):
        return Stage("k", "n", tmp_path / "s", "synthesis", {"max_epochs": 2, **overrides}).signature()

    (configs / "train.json").write_text(json.dumps({"prediction_type": "epsilon", "snr_gamma": 0.0}))
    before = signature()
    assert signature(prediction_type="epsilon", snr_gamma=0) == before
    (configs / "train.json").write_text(json.dumps({"prediction_type": "v_prediction", "snr_gamma": 5.0}))
    assert signature() != before and signature(prediction_type="epsilon", snr_gamma=0.0) == before
    assert signature() == signature(prediction_type="v_prediction", snr_gamma=5) != signature(snr_gamma=0.0)


def test_a_stage_records_wall_and_cpu_seconds_apart(tmp_path, monkeypatch):
    """Wall time counts a pause (here a sleep, as a SIGSTOP or other jobs on the cores would); CPU time does not."""
    import time

    def idle_bundle(name, configs, bundle_root, **overrides):
        time.sleep(0.5)
        (tmp_path / "s" / "out.txt").write_text("done")

    monkeypatch.setattr(stages, "run_bundle", idle_bundle)
    Stage("kind", "name", tmp_path / "s", "finetune", {}, outputs=[tmp_path / "s" / "out.txt"]).run()
    record = json.loads((tmp_path / "s" / "stage.json").read_text())
    assert record["seconds"] >= 0.5 and record["cpu_seconds"] < 0.2


def test_a_resumed_stage_counts_the_time_of_every_attempt(tmp_path, monkeypatch):
    """An interrupted attempt records its own time; a killed one (no chance to write) is timed to its log's last
    write; the finished stage's seconds are the sum, with each attempt listed."""
    import time

    folder = tmp_path / "s"

    def interrupted(name, configs, bundle_root, **overrides):
        time.sleep(0.3)
        raise KeyboardInterrupt

    make = lambda: Stage("kind", "name", folder, "finetune", {"max_epochs": 1}, outputs=[folder / "out.txt"])
    monkeypatch.setattr(stages, "run_bundle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make().run()
    # a second attempt killed 40 s after it began: it left a start without a time, and a log last written at +40 s
    started = json.loads((folder / stages.STAGE_STARTED).read_text())
    killed_at = time.time() - 100
    started["attempts"].append({"started": "2026-01-01T00:00:00", "start_time": killed_at})
    (folder / stages.STAGE_STARTED).write_text(json.dumps(started))
    (folder / stages.STAGE_LOG).touch()
    os.utime(folder / stages.STAGE_LOG, (killed_at + 40, killed_at + 40))

    def finishing(name, configs, bundle_root, **overrides):
        time.sleep(0.3)
        (folder / "out.txt").write_text("done")

    monkeypatch.setattr(stages, "run_bundle", finishing)
    assert make().run() >= 40.6
    record = json.loads((folder / "stage.json").read_text())
    seconds = [a["seconds"] for a in record["attempts"]]
    assert len(seconds) == 3 and seconds[0] >= 0.3 and seconds[1] == pytest.approx(40.0, abs=0.2) and seconds[2] >= 0.3
    assert record["attempts"][1]["estimated"] and record["attempts"][1]["cpu_seconds"] is None
    assert record["seconds"] == pytest.approx(sum(seconds), abs=0.11)
    assert make().run() == record["seconds"]  # skipped: the recorded total


def test_missing_input_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the stage that makes it first"):
        input_digest(tmp_path / "cache")


def test_done_stage_is_skipped_and_changed_stage_is_redone(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_bundle(name, configs, bundle_root, **overrides):
        calls.append(overrides["max_epochs"])
        (tmp_path / "s" / "out.txt").write_text(str(overrides["max_epochs"]))

    monkeypatch.setattr(stages, "run_bundle", fake_bundle)
    make = lambda epochs: Stage("kind", "name", tmp_path / "s", "finetune", {"max_epochs": epochs}, outputs=[tmp_path / "s" / "out.txt"])
    make(1).run()
    make(1).run()
    assert calls == [1] and "[skip] name" in capsys.readouterr().out
    (tmp_path / "s" / "stale.txt").write_text("from the old settings")
    make(2).run()
    assert calls == [1, 2] and "[redo] name" in capsys.readouterr().out
    assert not (tmp_path / "s" / "stale.txt").exists()
    assert json.loads((tmp_path / "s" / "stage.json").read_text())["overrides"] == {"max_epochs": 2}


def test_stage_without_its_outputs_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "run_bundle", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="without writing"):
        Stage("k", "n", tmp_path / "s", "finetune", {}, outputs=[tmp_path / "s" / "model.pt"]).run()
    assert not (tmp_path / "s" / "stage.json").exists()


def test_a_finished_stage_drops_its_resume_checkpoints_and_keeps_its_outputs(tmp_path, monkeypatch):
    """Resume checkpoints (~120 MB a MoCo v3 stage) only serve an interrupted stage; an interrupted one keeps them."""
    runs = []

    def bundle(name, configs, bundle_root, **overrides):
        models = Path(bundle_root) / "run" / "models"
        runs.append(sorted(p.name for p in models.iterdir()) if models.is_dir() else [])
        models.mkdir(parents=True, exist_ok=True)
        (models / "checkpoint_epoch=2.pt").write_bytes(b"state")
        if len(runs) == 1:
            raise KeyboardInterrupt  # the first run is interrupted after its first checkpoint
        (models / "model.pt").write_bytes(b"best")

    monkeypatch.setattr(stages, "run_bundle", bundle)
    models = tmp_path / "s" / "run" / "models"
    make = lambda: Stage("kind", "name", tmp_path / "s", "finetune", {"max_epochs": 2}, outputs=[models / "model.pt"])
    with pytest.raises(KeyboardInterrupt):
        make().run()
    assert (models / "checkpoint_epoch=2.pt").is_file()
    make().run()
    assert runs[1] == ["checkpoint_epoch=2.pt"]  # the same settings resumed from it
    assert sorted(p.name for p in models.iterdir()) == ["model.pt"] and (tmp_path / "s" / "stage.json").is_file()


def _slow_bundle(name, configs, bundle_root, **overrides):
    import time as _time

    with open(Path(bundle_root).parent / "calls.txt", "a") as f:
        f.write("run\n")
    _time.sleep(1.5)
    (Path(bundle_root) / "out.txt").write_text("done")


def _run_stage(folder):
    stages.run_bundle = _slow_bundle  # forked child: the fake bundle
    Stage("kind", "shared stage", folder, "finetune", {}, outputs=[folder / "out.txt"]).run()


def test_two_processes_on_one_stage_run_it_once_and_both_finish(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_run_stage, args=(tmp_path / "s",)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "calls.txt").read_text() == "run\n"  # the second waited, then found it done and skipped


def test_the_lock_of_a_killed_process_does_not_block(tmp_path, monkeypatch):
    import fcntl
    import signal
    import subprocess
    import sys

    (tmp_path / ".s.lock").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, time; f = open(r'%s', 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(60)" % (tmp_path / ".s.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with open(tmp_path / ".s.lock") as f:
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the holder lives
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    monkeypatch.setattr(stages, "run_bundle", lambda name, configs, bundle_root, **o: (Path(bundle_root) / "out.txt").write_text("x"))
    Stage("kind", "n", tmp_path / "s", "finetune", {}, outputs=[tmp_path / "s" / "out.txt"]).run()  # taken over, no wait
    assert (tmp_path / "s" / "stage.json").is_file()


def test_an_interrupted_stage_is_resumed_with_its_settings_and_cleared_with_others(tmp_path, monkeypatch, capsys):
    def interrupted(name, configs, bundle_root, **overrides):
        (Path(bundle_root) / "checkpoint_epoch=1.pt").write_text(str(overrides["max_epochs"]))
        raise KeyboardInterrupt

    make = lambda epochs: Stage("kind", "name", tmp_path / "s", "finetune", {"max_epochs": epochs}, outputs=[tmp_path / "s" / "out.txt"])
    monkeypatch.setattr(stages, "run_bundle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make(1).run()
    seen = []
    monkeypatch.setattr(stages, "run_bundle", lambda name, configs, bundle_root, **o: (seen.append(sorted(p.name for p in Path(bundle_root).iterdir())),
                                                                                       (Path(bundle_root) / "out.txt").write_text("x")))
    make(2).run()  # other settings: the interrupted run's checkpoint must not be resumed
    assert "[redo] name" in capsys.readouterr().out and "checkpoint_epoch=1.pt" not in seen[0]


def test_an_edited_mask_reruns_the_stages_that_read_the_dataset_only(sample_dataset, small_copy, tmp_path, monkeypatch, capsys):
    sample_dataset = small_copy(sample_dataset, n=2)  # a copy: the test edits a mask
    monkeypatch.setattr(stages, "run_bundle", lambda name, configs, bundle_root, **o: (Path(bundle_root) / "out.txt").write_text("x"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    reads_data = lambda: Stage("k", "reads data", tmp_path / "a", "finetune", {}, inputs=[sample_dataset], outputs=[tmp_path / "a" / "out.txt"])
    other = lambda: Stage("k", "other", tmp_path / "b", "finetune", {}, inputs=[weights], outputs=[tmp_path / "b" / "out.txt"])
    reads_data().run(), other().run()
    (sample_dataset / ".lock").write_text("")  # hidden files (locks) are not content
    reads_data().run()
    assert "[skip] reads data" in capsys.readouterr().out
    mask = sorted((sample_dataset / "masks").iterdir())[-1]
    mask.write_bytes(mask.read_bytes()[:-1] + bytes([mask.read_bytes()[-1] ^ 1]))  # one bit of one mask
    reads_data().run(), other().run()
    out = capsys.readouterr().out
    assert "[run ] reads data" in out and "[skip] other" in out


def test_a_stage_shows_one_line_and_keeps_its_output_in_its_log(tmp_path, monkeypatch, capfd):
    def chatty_bundle(name, configs, bundle_root, **overrides):
        os.write(1, b"2026-11-27 INFO - Epoch[1] Complete\n")
        os.write(2, b"Epoch [1/2]: [3/3] 100%|##########\n")
        out = Path(bundle_root) / "metrics.json"
        out.write_text(json.dumps({"metrics": {"mean_dice": {"mean": 0.8125}}}))

    monkeypatch.setattr(stages, "run_bundle", chatty_bundle)
    Stage("k", "fine-tune hc18", tmp_path / "s", "finetune", {}, outputs=[tmp_path / "s" / "metrics.json"]).run()
    shown = capfd.readouterr()
    assert "Epoch" not in shown.out + shown.err
    assert "[done] fine-tune hc18 in" in shown.out and "test Dice 0.812" in shown.out
    log = (tmp_path / "s" / "stage.log").read_text()
    assert "INFO - Epoch[1] Complete" in log and "100%|" in log


def test_pinned_configs_do_not_follow_edits_made_during_a_run(tmp_path, monkeypatch):
    repo_bundles = stages.bundles_dir()
    copy = tmp_path / "bundles"
    for configs in repo_bundles.glob("*/configs"):
        shutil.copytree(configs, copy / configs.parent.name / "configs")
    monkeypatch.setenv("TSKD_BUNDLES_DIR", str(copy))
    monkeypatch.setattr(stages, "_pinned", [])
    read = []
    monkeypatch.setattr(stages, "run", lambda config_file, **kw: read.append(json.loads(Path(config_file).read_text())))
    pinned = stages.pin_bundle_configs()
    assert stages.pin_bundle_configs() == pinned  # once per process
    train = copy / "tskd_student_segmentation" / "configs" / "train.json"
    train.write_text(json.dumps({"edited": "while the run was going"}))
    stages.run_bundle("tskd_student_segmentation", ["train.json"])
    assert "edited" not in read[0] and read[0]["student_name"] == "vit_tiny"
