"""The per-env object pool: the P shapes of the chosen object set that this scene build holds."""

from __future__ import annotations

from .bin_world import PoolObject
from .objects import load_object_set, spawner_cfg
from .scene_cfg import SceneSettingsCfg

__all__ = ["build_pool"]

POOL_SPAWN_MASS = 0.1
"""Mass every pool object is spawned with [kg]; each round overwrites it with its randomized draw."""


def build_pool(settings: SceneSettingsCfg) -> list[PoolObject]:
    """Select ``pool_size`` shapes of the object set by (seed, rotation) and make their spawners."""
    objects = settings.objects
    object_set = load_object_set(objects.object_set, seed=settings.seed)
    shapes = object_set.select_pool(objects.pool_size, rotation=objects.rotation, seed=settings.seed)
    return [
        PoolObject(
            name=shape.name,
            spawn=spawner_cfg(shape, mass=POOL_SPAWN_MASS),
            extent=tuple(float(e) for e in shape.size),
        )
        for shape in shapes
    ]
