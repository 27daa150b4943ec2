"""Object sets: seeded procedural "seen" and "novel" sets, and folders of the user's own meshes."""

from __future__ import annotations

from pathlib import Path

from .mesh_import import ObjectSetError, load_mesh_folder
from .procedural import SET_SIZE, SIZE_RANGES, ObjectSet, make_object_set
from .shapes import Part, ShapeSpec
from .usd import shape_usd, spawner_cfg

__all__ = [
    "SET_SIZE",
    "SIZE_RANGES",
    "ObjectSet",
    "ObjectSetError",
    "Part",
    "ShapeSpec",
    "load_mesh_folder",
    "load_object_set",
    "make_object_set",
    "shape_usd",
    "spawner_cfg",
]


def load_object_set(name_or_folder: str, seed: int = 0) -> ObjectSet:
    """"seen" or "novel" (procedural, from ``seed``), or a folder of mesh files."""
    if name_or_folder in SIZE_RANGES:
        return make_object_set(name_or_folder, seed)
    if Path(name_or_folder).is_dir():
        return load_mesh_folder(name_or_folder)
    raise ObjectSetError(
        f"objects.object_set: {name_or_folder!r} is neither a procedural set ({', '.join(SIZE_RANGES)}) nor a folder"
    )
