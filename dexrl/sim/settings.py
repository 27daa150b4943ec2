"""Scene settings from ``config/scene.yaml``, command-line options and ``key=value`` overrides."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dexrl.config import CONFIG_DIR, apply_mapping, apply_overrides, load_yaml, set_value

from .scene_cfg import SceneSettingsCfg

__all__ = ["default_device", "load_scene_settings"]


def default_device() -> str:
    """``cuda:0`` when a GPU is visible, else ``cpu``."""
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def load_scene_settings(overrides: Iterable[str] = (), **options) -> SceneSettingsCfg:
    """Defaults from ``config/scene.yaml``, then ``options`` (e.g. ``num_envs=8``; None values are skipped),
    then ``key=value`` overrides; validated."""
    settings = SceneSettingsCfg(device=default_device())
    default_file = CONFIG_DIR / "scene.yaml"
    if default_file.exists():
        apply_mapping(settings, load_yaml(default_file))
    for key, value in options.items():
        if value is not None:
            set_value(settings, key, value)
    apply_overrides(settings, overrides)
    settings.check()
    return settings

