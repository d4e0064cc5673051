"""What every run writes beside its outputs: resolved configuration and package versions."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping
from .io import write_json

PACKAGES = ("tskd", "torch", "torchvision", "monai", "pytorch-ignite", "timm", "segment-anything", "peft", "diffusers", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def write_run_record(output_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``config.resolved.json`` and ``versions.json`` into ``output_dir``; return the folder."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.resolved.json", _jsonable(config), sort_keys=True)
    write_json(out / "versions.json", package_versions())
    return out
