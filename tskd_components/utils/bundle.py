"""Helpers for bundle configs."""

from __future__ import annotations

from typing import Sequence


class MissingOverlayError(ValueError):
    """A bundle config that needs a method overlay was run without one."""


def require_overlay(bundle: str, overlays: Sequence[str]) -> None:
    """Stand-in value of a setting that only a method overlay defines: raises a message naming the overlays.

    Example: ``"method": "$tskd_components.utils.bundle.require_overlay('tskd_distill', ['ts_kd.json', 'ta_kd.json'])"``.
    """
    first = overlays[0]
    raise MissingOverlayError(
        f"{bundle}/configs/train.json needs a method overlay, one of {list(overlays)}: run it as "
        f"--config_file \"['configs/train.json','configs/{first}']\""
    )
