"""Reading and atomically writing weight files (safetensors or torch pickles)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .io import atomic_write

WRAPPER_KEYS = ("model", "state_dict", "network")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint (unwrapping ``{"model": ...}``-style dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found; check the path given as initial_weights / checkpoint")
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except SafetensorError as err:
            raise ValueError(unreadable_safetensors(path, err)) from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read weights file {path}: {err}; expected a safetensors file or a torch state dict") from err
    for key in WRAPPER_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def unreadable_safetensors(path: str | Path, err: Exception) -> str:
    return (f"cannot read {path} ({err}): the file is truncated or not a safetensors file (a copy or write broken off?); "
            "delete it and re-run the stage that wrote it")


def open_safetensors(path: str | Path):
    """``safetensors.safe_open`` (lazy, memory-mapped) with an error that names a truncated or foreign file."""
    try:
        return safe_open(str(path), framework="pt")
    except SafetensorError as err:
        raise ValueError(unreadable_safetensors(path, err)) from err


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors to ``path`` atomically (temp file + rename)."""
    with atomic_write(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


def require_file(path: str | Path, fix: str) -> str:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it and how to get it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    return str(path)


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (identifies a teacher checkpoint or a source image)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
