"""MuJoCo contact dimensionality for spawned shapes.

MuJoCo resists rolling only with ``condim = 6`` (sliding, torsional and rolling friction); with the default
of 3 a sphere or a cylinder on its side rolls across the bin forever and the heap never settles. Newton reads
the per-shape value from the USD attribute ``mjc:condim`` on each collision prim, so the spawner is wrapped
to author it right after the prims are created (before Newton parses the stage).
"""

from __future__ import annotations

import functools

from pxr import Sdf, Usd, UsdPhysics

__all__ = ["with_condim"]


def _spawn_and_set_condim(prim_path: str, cfg, *args, spawn_func, condim: int, **kwargs):
    prim = spawn_func(prim_path, cfg, *args, **kwargs)
    for child in Usd.PrimRange(prim):
        if child.HasAPI(UsdPhysics.CollisionAPI):
            child.CreateAttribute("mjc:condim", Sdf.ValueTypeNames.Int).Set(condim)
    return prim


def with_condim(spawn_cfg, condim: int = 6):
    """A copy of ``spawn_cfg`` whose collision prims carry ``mjc:condim = condim`` (1, 3, 4 or 6)."""
    if condim not in (1, 3, 4, 6):
        raise ValueError(f"condim must be 1, 3, 4 or 6, got {condim}")
    cfg = spawn_cfg.copy()
    cfg.func = functools.partial(_spawn_and_set_condim, spawn_func=spawn_cfg.func, condim=condim)
    return cfg
