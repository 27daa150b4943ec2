"""Build a :class:`BinWorld` from settings: the object pool, then the scene."""

from __future__ import annotations

from .bin_world import BinWorld
from .pool import build_pool
from .scene_cfg import SceneSettingsCfg

__all__ = ["make_world"]


def make_world(settings: SceneSettingsCfg, extras: dict | None = None) -> BinWorld:
    """A ready :class:`BinWorld` (not yet randomized: call ``new_round``)."""
    return BinWorld(settings, build_pool(settings), extras=extras)
