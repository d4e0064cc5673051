"""Stage bookkeeping: signatures, skip when done, redo when inputs change."""

import json

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
