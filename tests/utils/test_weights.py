import json

import pytest
import torch

from tskd_components.utils.run_record import write_run_record
from tskd_components.utils.weights import file_digest, read_state_dict, require_file, save_safetensors


def test_read_state_dict_formats(tmp_path):
    state = {"a.weight": torch.randn(2, 3), "b": torch.arange(4)}
    save_safetensors(state, tmp_path / "w.safetensors", {"note": "x"})
    for name, payload in (("plain.pt", state), ("wrapped.pt", {"model": state, "epoch": 3}), ("lightning.ckpt", {"state_dict": state})):
        torch.save(payload, tmp_path / name)
    for name in ("w.safetensors", "plain.pt", "wrapped.pt", "lightning.ckpt"):
        loaded = read_state_dict(tmp_path / name)
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read weights file .*bad.pt"):
        read_state_dict(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="weights file .*none.pt not found"):
        read_state_dict(tmp_path / "none.pt")


def test_require_file_and_digest(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert require_file(tmp_path / "f", "fix") == str(tmp_path / "f")
    assert file_digest(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(FileNotFoundError, match="g not found; train first"):
        require_file(tmp_path / "g", "train first")


def test_run_record(tmp_path):
    write_run_record(tmp_path / "run", {"seed": 3, "sizes": (1, 2), "device": torch.device("cpu")})
    config = json.loads((tmp_path / "run" / "config.resolved.json").read_text())
    assert config == {"seed": 3, "sizes": [1, 2], "device": "device(type='cpu')"}
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert torch.__version__.startswith(versions["torch"]) and "python" in versions


def test_truncated_safetensors_names_the_file(tmp_path):
    path = save_safetensors({"w": torch.zeros(100)}, tmp_path / "student.safetensors")
    path.write_bytes(path.read_bytes()[:-40])  # a copy broken off
    with pytest.raises(ValueError, match=r"cannot read .*student\.safetensors.*truncated.*re-run the stage"):
        read_state_dict(path)
