"""Bring your own objects: a folder of OBJ / STL / PLY / GLB / OFF / USD meshes becomes an object set.

Every mesh file below the folder (searched recursively, sorted by path) becomes one shape:

1. read: trimesh for OBJ/STL/PLY/GLB/GLTF/OFF (all geometry of a file is merged), pxr for USD (every
   ``UsdGeom.Mesh`` with its world transform; an authored ``metersPerUnit`` gives the units);
2. clean: vertices merged by position (texture seams split them), degenerate and duplicate faces dropped,
   components smaller than ``FRAGMENT_FRACTION`` of the largest one dropped (scan debris);
3. units: ``units="auto"`` takes the first of metres, millimetres, centimetres that makes the largest extent
   lie within ``PLAUSIBLE_SIZE``; or say the unit; ``target_size`` then rescales to a largest extent [m];
4. collision: the convex hull when the mesh fills at least ``CONVEX_FILL`` of it, else an approximate convex
   decomposition (CoACD), cached under ``<cache_dir>/decompositions`` keyed by the file's SHA-256;
5. centred on its bounding box.

A file that cannot become an object raises :class:`ObjectSetError` naming it and saying why.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import numpy as np
import trimesh

from dexrl.config import ConfigError

from .shapes import ObjectSet, ShapeSpec

__all__ = [
    "MESH_SUFFIXES",
    "UNIT_SCALES",
    "ObjectSetError",
    "default_cache_dir",
    "load_mesh_file",
    "load_mesh_folder",
]

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".glb", ".gltf", ".off", ".usd", ".usda", ".usdc")
UNIT_SCALES = {"m": 1.0, "mm": 0.001, "cm": 0.01}
"""Metres per file unit; ``units="auto"`` tries them in this order."""

PLAUSIBLE_SIZE = (0.005, 0.5)
"""Largest extent of a graspable object [m]: what ``units="auto"`` aims for and a loaded mesh must meet."""

FRAGMENT_FRACTION = 0.05
"""Components whose largest extent is below this fraction of the largest component's are dropped."""

CONVEX_FILL = 0.95
"""A watertight mesh with at least this fraction of its convex hull's volume collides as that hull."""

COACD_OPTIONS = {
    "threshold": 0.05,
    "max_convex_hull": 16,
    "preprocess_resolution": 30,
    "resolution": 1000,
    "mcts_iterations": 60,
    "mcts_max_depth": 2,
    "seed": 0,
}
"""CoACD settings (concavity threshold relative to the mesh size, at most 16 pieces, ~1-5 s per mesh);
part of the cache key."""

CLEANING_VERSION = 1
"""Bumped whenever cleaning changes what is decomposed (part of the cache key)."""


class ObjectSetError(ValueError):
    """A mesh file or folder cannot become an object set; the message names the file and the reason."""


def default_cache_dir() -> Path:
    """Where object files are cached: ``$DEXRL_CACHE/objects``, else ``~/.cache/dexrl/objects``."""
    root = os.environ.get("DEXRL_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "dexrl") / "objects"


# ---------------------------------------------------------------------------------------------- reading
def _read_usd(path: Path) -> tuple[trimesh.Trimesh, float | None]:
    """All meshes of a USD stage in stage units, and its metersPerUnit when authored."""
    from pxr import Usd, UsdGeom  # noqa: PLC0415

    stage = Usd.Stage.Open(str(path))
    cache = UsdGeom.XformCache(Usd.TimeCode.Default())
    meshes = []
    for prim in stage.Traverse():
        if not prim.IsA(UsdGeom.Mesh):
            continue
        geom = UsdGeom.Mesh(prim)
        points = np.asarray(geom.GetPointsAttr().Get() or [], dtype=np.float64).reshape(-1, 3)
        counts = np.asarray(geom.GetFaceVertexCountsAttr().Get() or [], dtype=np.int64)
        indices = np.asarray(geom.GetFaceVertexIndicesAttr().Get() or [], dtype=np.int64)
        if len(points) == 0 or len(counts) == 0:
            continue
        if (
            counts.min() < 3
            or counts.sum() != len(indices)
            or indices.min() < 0
            or indices.max() >= len(points)
        ):
            raise ObjectSetError(f"{path}: mesh {prim.GetPath()} has inconsistent face indices")
        # Fan-triangulate every polygon: triangle j of a face starting at s is (s, s + j + 1, s + j + 2).
        fans = counts - 2
        starts = np.repeat(np.cumsum(counts) - counts, fans)
        corner = np.arange(fans.sum()) - np.repeat(np.cumsum(fans) - fans, fans)
        faces = indices[np.column_stack([starts, starts + corner + 1, starts + corner + 2])]
        transform = np.asarray(cache.GetLocalToWorldTransform(prim), dtype=np.float64).T
        meshes.append(trimesh.Trimesh(points, faces, process=False).apply_transform(transform))
    if not meshes:
        raise ObjectSetError(f"{path}: the USD file holds no UsdGeom.Mesh with faces (not a mesh)")
    meters = UsdGeom.GetStageMetersPerUnit(stage) if UsdGeom.StageHasAuthoredMetersPerUnit(stage) else None
    return trimesh.util.concatenate(meshes), meters


def _read(path: Path) -> tuple[trimesh.Trimesh, float | None]:
    """The raw triangles of a file, and its metres per unit when the file says so."""
    try:
        if path.suffix.lower() in (".usd", ".usda", ".usdc"):
            mesh, meters = _read_usd(path)
        else:
            mesh, meters = trimesh.load(path, process=False), None
            if isinstance(mesh, trimesh.Scene) and any(
                isinstance(g, trimesh.Trimesh) for g in mesh.geometry.values()
            ):
                mesh = mesh.to_mesh()  # every mesh of the scene with its transform, other geometry dropped
    except ObjectSetError:
        raise
    except Exception as error:  # the readers raise many types for broken files
        raise ObjectSetError(f"{path}: cannot be read as a mesh ({type(error).__name__}: {error})") from error
    if isinstance(mesh, trimesh.Scene) and not mesh.geometry:
        raise ObjectSetError(f"{path}: the mesh is empty (no triangles)")
    if not isinstance(mesh, trimesh.Trimesh):
        kinds = (
            sorted({type(g).__name__ for g in mesh.geometry.values()})
            if isinstance(mesh, trimesh.Scene)
            else [type(mesh).__name__]
        )
        raise ObjectSetError(f"{path}: holds no triangles ({', '.join(kinds)}: not a mesh)")
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ObjectSetError(f"{path}: the mesh is empty (no triangles)")
    if not np.isfinite(mesh.vertices).all():
        raise ObjectSetError(f"{path}: the mesh has NaN or infinite vertex coordinates")
    return mesh, meters


def _is_solid(points: np.ndarray) -> bool:
    """Whether a point set spans a volume (qhull fails on flat or collinear sets)."""
    try:
        return len(points) >= 4 and trimesh.convex.convex_hull(np.asarray(points)).volume > 0
    except Exception:  # qhull raises several types for flat or collinear sets
        return False


def _clean(mesh: trimesh.Trimesh, path: Path) -> trimesh.Trimesh:
    """Merge seam vertices, drop degenerate faces and small fragments; reject flat meshes."""
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)  # geometry only: seams merge by position
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces() & mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise ObjectSetError(f"{path}: every triangle is degenerate (zero area)")
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        largest = max(float(p.extents.max()) for p in parts)
        mesh = trimesh.util.concatenate([p for p in parts if p.extents.max() >= FRAGMENT_FRACTION * largest])
    if not _is_solid(mesh.vertices):
        raise ObjectSetError(f"{path}: the mesh is flat or degenerate (zero volume)")
    return mesh


def _unit_scale(extent: float, units: str, file_meters: float | None, path: Path) -> float:
    """Metres per file unit."""
    if units != "auto":
        return UNIT_SCALES[units]
    if file_meters is not None:
        return file_meters
    low, high = PLAUSIBLE_SIZE
    for scale in UNIT_SCALES.values():
        if low <= extent * scale <= high:
            return scale
    raise ObjectSetError(
        f"{path}: cannot tell its units: a largest extent of {extent:g} is no object size "
        f"({low}-{high} m) in "
        f"{', '.join(UNIT_SCALES)}; pass units= or target_size="
    )


# ---------------------------------------------------------------------------------------------- collision
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _decompose(mesh: trimesh.Trimesh, path: Path, cache: Path) -> tuple[np.ndarray, ...]:
    """Convex pieces (vertex sets) of the cleaned mesh of ``path`` in file units, cached by file hash."""
    hull = trimesh.convex.convex_hull(mesh.vertices)
    if mesh.is_volume and mesh.volume >= CONVEX_FILL * hull.volume:
        return (np.asarray(hull.vertices),)
    options = ",".join(f"{k}={v}" for k, v in sorted(COACD_OPTIONS.items()))
    option_key = hashlib.sha256(f"v{CLEANING_VERSION}|{FRAGMENT_FRACTION}|{options}".encode()).hexdigest()[:8]
    cached = cache / f"{_file_digest(path)[:32]}_{option_key}.npz"
    if cached.exists():
        with np.load(cached) as stored:
            return tuple(stored[f"part_{i}"] for i in range(len(stored.files)))
    import coacd  # noqa: PLC0415

    coacd.set_log_level("error")
    pieces = coacd.run_coacd(coacd.Mesh(mesh.vertices, mesh.faces), **COACD_OPTIONS)
    hulls = tuple(np.asarray(vertices, dtype=np.float64) for vertices, _ in pieces if _is_solid(vertices))
    if not hulls:
        raise ObjectSetError(f"{path}: the convex decomposition returned no solid piece")
    cache.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
    np.savez(partial, **{f"part_{i}": v for i, v in enumerate(hulls)})
    partial.replace(cached)  # atomic: concurrent builds never read half a file
    return hulls


# ---------------------------------------------------------------------------------------------- public
def _check_options(units: str, target_size: float | None) -> None:
    if units != "auto" and units not in UNIT_SCALES:
        raise ConfigError(f"units must be one of auto, {', '.join(UNIT_SCALES)}; got {units!r}")
    low, high = PLAUSIBLE_SIZE
    if target_size is not None and not (
        isinstance(target_size, (int, float)) and math.isfinite(target_size) and low <= target_size <= high
    ):
        raise ConfigError(f"target_size must lie within [{low}, {high}] m, got {target_size!r}")


def _shape_name(path: Path, folder: Path) -> str:
    relative = path.relative_to(folder).with_suffix("")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "__".join(relative.parts))


def load_mesh_file(
    path: str | Path,
    *,
    units: str = "auto",
    target_size: float | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> ShapeSpec:
    """One mesh file as a shape of kind "mesh" (see the module docstring for the steps).

    Args:
        path: an OBJ, STL, PLY, GLB, GLTF, OFF or USD file.
        units: "auto", "m", "cm" or "mm": the unit of the file's coordinates.
        target_size: if given, the largest extent [m] the object is scaled to (units then do not matter).
        cache_dir: object cache (default :func:`default_cache_dir`); decompositions go to ``decompositions/``.
        name: the shape's name (default: the file's stem).

    Raises:
        ObjectSetError: the file is unreadable, not a mesh, empty, flat, has NaNs, or has no plausible size.
        ConfigError: ``units`` or ``target_size`` is not an allowed value.
    """
    _check_options(units, target_size)
    path = Path(path)
    raw, file_meters = _read(path)
    mesh = _clean(raw, path)
    extent = float(mesh.extents.max())
    scale = target_size / extent if target_size is not None else _unit_scale(extent, units, file_meters, path)
    low, high = PLAUSIBLE_SIZE
    if not low <= extent * scale <= high:
        raise ObjectSetError(
            f"{path}: {extent * scale:g} m across with units={units!r}, outside {low}-{high} m; "
            "pass units= or target_size="
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    hulls = _decompose(mesh, path, cache / "decompositions")
    points = np.concatenate([mesh.vertices, *hulls])
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    params = {
        "vertices": (mesh.vertices - centre) * scale,
        "faces": np.asarray(mesh.faces, dtype=np.int64),
        "hulls": tuple((h - centre) * scale for h in hulls),
    }
    return ShapeSpec.build(name or _shape_name(path, path.parent), "mesh", params, source=str(path))


def load_mesh_folder(
    path: str | Path,
    *,
    units: str = "auto",
    target_size: float | None = None,
    cache_dir: str | Path | None = None,
) -> ObjectSet:
    """An object set of every mesh file below the folder ``path`` (recursively, sorted by path).

    Shape names are the files' paths relative to the folder, without suffix, with ``/`` written as ``__``.
    Other files (textures, .mtl) are ignored. Arguments as for :func:`load_mesh_file`.

    Raises:
        ObjectSetError: the folder is missing or holds no mesh file, two files map to one name, or a file
            cannot become an object (the message names the file).
        ConfigError: ``units`` or ``target_size`` is not an allowed value.
    """
    _check_options(units, target_size)
    folder = Path(path)
    if not folder.is_dir():
        raise ObjectSetError(f"{folder}: not a folder of meshes")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise ObjectSetError(f"{folder}: holds no mesh files ({', '.join(MESH_SUFFIXES)})")
    names: dict[str, Path] = {}
    for file in files:
        name = _shape_name(file, folder)
        if name in names:
            raise ObjectSetError(f"{file}: gives the same object name {name!r} as {names[name]}; rename one")
        names[name] = file
    shapes = [
        load_mesh_file(file, units=units, target_size=target_size, cache_dir=cache_dir, name=name)
        for name, file in names.items()
    ]
    return ObjectSet(name=folder.name, shapes=shapes)
