"""Bring your own objects: a folder of OBJ / STL / PLY / GLB / USD meshes becomes an object set.

Each file is loaded with trimesh (USD through pxr), cleaned (vertices merged along texture seams, components
smaller than 2% of the largest dropped), converted to metres (``units="auto"`` reads meshes larger than 1 m as
millimetres, larger than 0.3 m as centimetres; or say it), optionally scaled to ``target_size``, centred, and
split into convex parts: its convex hull when it nearly fills it, else an approximate convex decomposition
(CoACD), cached by file hash. A file that cannot become an object raises :class:`ObjectSetError` naming it.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import trimesh

from .procedural import ObjectSet
from .shapes import Part, ShapeSpec
from .usd import default_cache_dir

__all__ = ["MESH_SUFFIXES", "ObjectSetError", "load_mesh_folder"]

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".glb", ".gltf", ".off", ".usd", ".usda", ".usdc")
UNIT_SCALES = {"m": 1.0, "cm": 0.01, "mm": 0.001}
CONVEX_FILL = 0.9  # a mesh whose volume fills this much of its hull collides as the hull


class ObjectSetError(ValueError):
    """A mesh file or folder cannot become an object set; the message names the file and the reason."""


def _read_usd_mesh(path: Path) -> trimesh.Trimesh:
    from pxr import Usd, UsdGeom  # noqa: PLC0415

    stage = Usd.Stage.Open(str(path))
    if stage is None:
        raise ObjectSetError(f"{path}: not a readable USD file")
    meshes = []
    for prim in stage.Traverse():
        if prim.IsA(UsdGeom.Mesh):
            mesh = UsdGeom.Mesh(prim)
            points = np.asarray(mesh.GetPointsAttr().Get(), dtype=np.float64)
            counts = np.asarray(mesh.GetFaceVertexCountsAttr().Get())
            indices = np.asarray(mesh.GetFaceVertexIndicesAttr().Get())
            faces, offset = [], 0
            for count in counts:  # fan-triangulate polygons
                faces += [[indices[offset], indices[offset + i], indices[offset + i + 1]] for i in range(1, count - 1)]
                offset += count
            transform = np.asarray(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(Usd.TimeCode.Default())).T
            meshes.append(trimesh.Trimesh(points, np.asarray(faces)).apply_transform(transform))
    if not meshes:
        raise ObjectSetError(f"{path}: the USD file holds no mesh")
    return trimesh.util.concatenate(meshes)


def _load(path: Path) -> trimesh.Trimesh:
    try:
        if path.suffix.lower() in (".usd", ".usda", ".usdc"):
            mesh = _read_usd_mesh(path)
        else:
            loaded = trimesh.load(path, force="mesh", process=False)
            mesh = loaded if isinstance(loaded, trimesh.Trimesh) else None
    except ObjectSetError:
        raise
    except Exception as error:  # trimesh raises many types for broken files
        raise ObjectSetError(f"{path}: cannot read the mesh ({type(error).__name__}: {error})") from error
    if mesh is None or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise ObjectSetError(f"{path}: the file holds no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise ObjectSetError(f"{path}: the mesh has non-finite vertex coordinates")
    return mesh


def _clean(mesh: trimesh.Trimesh, path: Path) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        largest = max(p.extents.max() for p in parts)
        mesh = trimesh.util.concatenate([p for p in parts if p.extents.max() >= 0.02 * largest])
    if mesh.extents.min() <= 0 or trimesh.convex.convex_hull(mesh.vertices).volume <= 0:
        raise ObjectSetError(f"{path}: the mesh is flat or degenerate (zero volume)")
    return mesh


def _unit_scale(mesh: trimesh.Trimesh, units: str, path: Path) -> float:
    if units != "auto":
        if units not in UNIT_SCALES:
            raise ObjectSetError(f"units must be one of auto, {', '.join(UNIT_SCALES)}; got {units!r}")
        return UNIT_SCALES[units]
    extent = float(mesh.extents.max())
    return 0.001 if extent > 1.0 else 0.01 if extent > 0.3 else 1.0


def _convex_parts(mesh: trimesh.Trimesh, cache: Path) -> list[Part]:
    hull = trimesh.convex.convex_hull(mesh.vertices)
    if mesh.is_watertight and mesh.volume >= CONVEX_FILL * hull.volume:
        pieces = [(hull.vertices, hull.faces)]
    else:
        key = hashlib.sha1(mesh.vertices.tobytes() + mesh.faces.tobytes()).hexdigest()[:16]
        cached = cache / f"coacd_{key}.pkl"
        if cached.exists():
            pieces = pickle.loads(cached.read_bytes())
        else:
            import coacd  # noqa: PLC0415

            coacd.set_log_level("error")
            pieces = coacd.run_coacd(coacd.Mesh(mesh.vertices, mesh.faces), threshold=0.08, max_convex_hull=12)
            cache.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps([(np.asarray(v), np.asarray(f)) for v, f in pieces]))
    parts = []
    for vertices, faces in pieces:
        piece = trimesh.convex.convex_hull(np.asarray(vertices))
        parts.append(Part("mesh", vertices=np.asarray(piece.vertices), faces=np.asarray(piece.faces)))
    return parts


def load_mesh_folder(
    folder: str | Path, *, units: str = "auto", target_size: float | None = None, cache_dir: Path | None = None
) -> ObjectSet:
    """An object set from every mesh file in ``folder`` (sorted by name).

    Args:
        units: "auto", "m", "cm" or "mm": the unit of the files' coordinates.
        target_size: if given, each object is scaled so that its largest extent is this [m].
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ObjectSetError(f"{folder}: not a folder of meshes")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise ObjectSetError(f"{folder}: no mesh files ({', '.join(MESH_SUFFIXES)})")
    cache = (cache_dir or default_cache_dir()) / "decompositions"
    shapes = []
    for path in files:
        mesh = _clean(_load(path), path)
        mesh.apply_scale(_unit_scale(mesh, units, path))
        if target_size is not None:
            mesh.apply_scale(target_size / float(mesh.extents.max()))
        mesh.apply_translation(-mesh.bounds.mean(axis=0))
        if not 0.005 <= mesh.extents.max() <= 0.5:
            raise ObjectSetError(f"{path}: {mesh.extents.max():.3f} m across after unit conversion; pass units= or target_size=")
        parts = _convex_parts(mesh, cache)
        shapes.append(ShapeSpec(name=path.stem, kind=f"mesh:{path.suffix.lower()[1:]}", parts=tuple(parts),
                                size=tuple(float(v) for v in mesh.extents), source=str(path)))
    return ObjectSet(name=folder.name, shapes=shapes)
