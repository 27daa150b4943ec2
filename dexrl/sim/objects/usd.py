"""Author object shapes as USD rigid bodies (pxr only) and make Isaac Lab spawner cfgs for them.

Each shape becomes one file: a root Xform with ``RigidBodyAPI`` and ``MassAPI``, and one collider child per
convex part (``UsdGeom.Cube`` / ``Sphere`` / ``Cylinder`` / ``Capsule``, or a ``UsdGeom.Mesh`` with a convex-hull
approximation). Colliders carry ``mjc:condim = 6`` so that MuJoCo resists rolling (round objects settle).
Files are named by a hash of the shape, so re-authoring is skipped when nothing changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .shapes import ShapeSpec

__all__ = ["default_cache_dir", "shape_usd", "spawner_cfg"]

CONDIM = 6
"""MuJoCo contact dimensionality of object colliders (sliding, torsional and rolling friction)."""


def default_cache_dir() -> Path:
    """Where authored object files go: ``$DEXRL_CACHE/objects`` or ``~/.cache/dexrl/objects``."""
    root = os.environ.get("DEXRL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "dexrl") / "objects"


def _digest(shape: ShapeSpec) -> str:
    h = hashlib.sha1(f"{shape.name}|{shape.kind}|{CONDIM}".encode())
    for part in shape.parts:
        h.update(repr((part.kind, part.size, part.translation, part.rotation)).encode())
        if part.vertices is not None:
            h.update(np.ascontiguousarray(part.vertices, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(part.faces, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def shape_usd(shape: ShapeSpec, folder: Path | None = None) -> Path:
    """The USD file of ``shape`` in ``folder`` (authored if missing)."""
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics, Vt  # noqa: PLC0415

    folder = default_cache_dir() if folder is None else Path(folder)
    path = folder / f"{shape.name}_{_digest(shape)}.usda"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Object").GetPrim()
    stage.SetDefaultPrim(root)
    UsdPhysics.RigidBodyAPI.Apply(root)
    UsdPhysics.MassAPI.Apply(root)
    for index, part in enumerate(shape.parts):
        prim_path = f"/Object/part_{index:02d}"
        if part.kind == "box":
            geom = UsdGeom.Cube.Define(stage, prim_path)
            geom.CreateSizeAttr(1.0)
        elif part.kind == "sphere":
            geom = UsdGeom.Sphere.Define(stage, prim_path)
            geom.CreateRadiusAttr(part.size[0])
        elif part.kind in ("cylinder", "capsule"):
            geom = (UsdGeom.Cylinder if part.kind == "cylinder" else UsdGeom.Capsule).Define(stage, prim_path)
            geom.CreateRadiusAttr(part.size[0])
            geom.CreateHeightAttr(part.size[1])
            geom.CreateAxisAttr("Z")
        else:
            geom = UsdGeom.Mesh.Define(stage, prim_path)
            geom.CreatePointsAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, v)) for v in part.vertices]))
            geom.CreateFaceVertexCountsAttr(Vt.IntArray([3] * len(part.faces)))
            geom.CreateFaceVertexIndicesAttr(Vt.IntArray([int(i) for i in np.asarray(part.faces).reshape(-1)]))
            UsdPhysics.MeshCollisionAPI.Apply(geom.GetPrim()).CreateApproximationAttr("convexHull")
        xform = UsdGeom.Xformable(geom)
        xform.AddTranslateOp().Set(Gf.Vec3d(*part.translation))
        w, x, y, z = part.rotation
        xform.AddOrientOp(UsdGeom.XformOp.PrecisionDouble).Set(Gf.Quatd(w, x, y, z))
        if part.kind == "box":
            xform.AddScaleOp().Set(Gf.Vec3f(*part.size))
        UsdPhysics.CollisionAPI.Apply(geom.GetPrim())
        geom.GetPrim().CreateAttribute("mjc:condim", Sdf.ValueTypeNames.Int).Set(CONDIM)
    tmp = path.with_suffix(".tmp.usda")
    stage.GetRootLayer().Export(str(tmp))
    tmp.replace(path)  # atomic: parallel builds never read a half-written file
    return path


def spawner_cfg(shape: ShapeSpec, mass: float, folder: Path | None = None):
    """An Isaac Lab spawner of ``shape`` as a rigid body of ``mass`` [kg]."""
    import isaaclab.sim as sim_utils  # noqa: PLC0415

    return sim_utils.UsdFileCfg(
        usd_path=str(shape_usd(shape, folder)),
        rigid_props=sim_utils.UsdPhysicsRigidBodyCfg(),
        mass_props=sim_utils.MassCfg(mass=mass),
    )
