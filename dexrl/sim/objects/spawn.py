"""Isaac Lab spawner cfgs for shapes: native primitives where the physics engine has them, else a USD file.

- box, cylinder, capsule, sphere: ``sim_utils.CuboidCfg`` / ``CylinderCfg`` / ``CapsuleCfg`` / ``SphereCfg``.
- every other kind (cone included: MuJoCo has no cone primitive, and ``ConeCfg`` stops MuJoCo-Warp with a
  ``KeyError`` when the solver is built) becomes a USD file authored here with pxr and loaded with
  ``sim_utils.UsdFileCfg``::

      /Object                      Xform, default prim, RigidBodyAPI + MassAPI
        /Object/visual             Mesh: the visible surface (no collision)
        /Object/collision          Xform, purpose "guide" (not drawn)
          /Object/collision/part_00  Mesh + CollisionAPI + MeshCollisionAPI(approximation "convexHull")
          ...                      one per convex piece

  Files go to ``<cache_dir>/usd/<name>_<digest>_v<layout>.usda``; the digest covers the geometry, so a file
  is written once and re-used by later builds.

Mass, friction (sliding and rolling), restitution and MuJoCo's contact dimensionality (``mjc:condim``) are
set on the spawned prims by the cfg, so one file serves every mass and material.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import trimesh

from dexrl.config import ConfigError

from .mesh_import import default_cache_dir
from .shapes import ShapeSpec

if TYPE_CHECKING:
    import isaaclab.sim as sim_utils

__all__ = ["shape_usd", "spawner_cfg"]

USD_LAYOUT_VERSION = 1
"""Bumped whenever the authored file layout changes (it is part of every file name)."""


def _set_mesh(geom, mesh: trimesh.Trimesh) -> None:
    """Points, triangles and extent of a ``UsdGeom.Mesh`` (no subdivision)."""
    from pxr import UsdGeom, Vt  # noqa: PLC0415

    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    geom.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(vertices))
    geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, dtype=np.int32)))
    geom.CreateFaceVertexIndicesAttr(
        Vt.IntArray.FromNumpy(np.asarray(mesh.faces, dtype=np.int32).reshape(-1))
    )
    geom.CreateExtentAttr(Vt.Vec3fArray.FromNumpy(np.stack([vertices.min(axis=0), vertices.max(axis=0)])))
    geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)


def shape_usd(shape: ShapeSpec, cache_dir: str | Path | None = None) -> Path:
    """The USD file of ``shape`` (see the module docstring), authored into ``<cache_dir>/usd`` if missing.

    Args:
        shape: any shape (primitives too, though :func:`spawner_cfg` spawns those natively).
        cache_dir: object cache; default :func:`~dexrl.sim.objects.mesh_import.default_cache_dir`.
    """
    from pxr import Usd, UsdGeom, UsdPhysics  # noqa: PLC0415

    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "usd"
    path = folder / f"{shape.name}_{shape.digest()}_v{USD_LAYOUT_VERSION}.usda"
    if path.exists():
        return path
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdPhysics.SetStageKilogramsPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Object").GetPrim()
    stage.SetDefaultPrim(root)
    root.SetCustomDataByKey(
        "dexrl:shape", {"name": shape.name, "kind": shape.kind, "size_m": list(shape.size)}
    )
    UsdPhysics.RigidBodyAPI.Apply(root)
    UsdPhysics.MassAPI.Apply(root)
    _set_mesh(UsdGeom.Mesh.Define(stage, "/Object/visual"), shape.mesh())
    colliders = UsdGeom.Xform.Define(stage, "/Object/collision")
    colliders.CreatePurposeAttr(UsdGeom.Tokens.guide)  # collision geometry is not drawn (nor rendered)
    for index, part in enumerate(shape.convex_parts()):
        geom = UsdGeom.Mesh.Define(stage, f"/Object/collision/part_{index:02d}")
        _set_mesh(geom, part)
        UsdPhysics.CollisionAPI.Apply(geom.GetPrim())
        UsdPhysics.MeshCollisionAPI.Apply(geom.GetPrim()).CreateApproximationAttr(
            UsdPhysics.Tokens.convexHull
        )
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.usda")
    stage.GetRootLayer().Export(str(partial))
    partial.replace(path)  # atomic: concurrent builds never read half a file
    return path


def _check(name: str, value: float | None, low: float, high: float, unit: str = "") -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number within [{low}, {high}]{unit}, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must lie within [{low}, {high}]{unit}, got {value!r}")


def spawner_cfg(
    shape: ShapeSpec,
    *,
    mass: float | None = None,
    density: float | None = None,
    friction: float = 0.8,
    rolling_friction: float = 0.002,
    restitution: float = 0.0,
    condim: int = 6,
    cache_dir: str | Path | None = None,
) -> sim_utils.SpawnerCfg:
    """An Isaac Lab spawner of ``shape`` as one rigid body with collision, mass and a contact material.

    Args:
        shape: the shape; native primitive for box/cylinder/capsule/sphere, else its USD file.
        mass: body mass [kg]; give this or ``density``.
        density: body density [kg/m^3] over the collision pieces; give this or ``mass``.
        friction: static and dynamic friction coefficient.
        rolling_friction: rolling resistance arm [m] (acts with ``condim`` 6; 0 lets cylinders roll on).
        restitution: coefficient of restitution (MuJoCo-Warp's soft contacts ignore it; PhysX uses it).
        condim: MuJoCo contact dimensionality of the colliders: 1 (frictionless), 3 (sliding),
            4 (+ torsional), 6 (+ rolling; lets round objects come to rest).
        cache_dir: where USD files are written (default
            :func:`~dexrl.sim.objects.mesh_import.default_cache_dir`).

    Raises:
        ConfigError: a value out of range, naming it and the range.
    """
    import isaaclab.sim as sim_utils  # noqa: PLC0415
    from isaaclab.sim.spawners.materials import UsdPhysicsRigidBodyMaterialCfg  # noqa: PLC0415
    from isaaclab_newton.sim import NewtonMaterialCfg  # noqa: PLC0415

    from dexrl.sim.contact_props import with_condim  # noqa: PLC0415

    if (mass is None) == (density is None):
        raise ConfigError(f"give exactly one of mass [kg] and density [kg/m^3] for shape {shape.name!r}")
    _check("mass", mass, 1e-4, 100.0, " kg")
    _check("density", density, 1.0, 50_000.0, " kg/m^3")
    _check("friction", friction, 0.0, 5.0)
    _check("rolling_friction", rolling_friction, 0.0, 0.1, " m")
    _check("restitution", restitution, 0.0, 1.0)
    if condim not in (1, 3, 4, 6):
        raise ConfigError(f"condim must be one of 1, 3, 4, 6, got {condim!r}")
    props = {
        "rigid_props": sim_utils.UsdPhysicsRigidBodyCfg(),
        "collision_props": sim_utils.UsdPhysicsCollisionCfg(),
        "mass_props": sim_utils.MassCfg(mass=mass)
        if mass is not None
        else sim_utils.MassCfg(density=density),
        "physics_material": [
            UsdPhysicsRigidBodyMaterialCfg(
                static_friction=friction, dynamic_friction=friction, restitution=restitution
            ),
            NewtonMaterialCfg(rolling_friction=rolling_friction),
        ],
    }
    p = shape.params
    if shape.kind == "box":
        cfg = sim_utils.CuboidCfg(size=tuple(float(v) for v in p["extents"]), **props)
    elif shape.kind == "cylinder":
        cfg = sim_utils.CylinderCfg(radius=p["radius"], height=p["height"], axis="Z", **props)
    elif shape.kind == "capsule":
        cfg = sim_utils.CapsuleCfg(radius=p["radius"], height=p["height"], axis="Z", **props)
    elif shape.kind == "sphere":
        cfg = sim_utils.SphereCfg(radius=p["radius"], **props)
    else:
        cfg = sim_utils.UsdFileCfg(usd_path=str(shape_usd(shape, cache_dir)), **props)
    return with_condim(cfg, condim)
