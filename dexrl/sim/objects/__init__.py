"""Object sets: seeded procedural "seen" and "novel" sets, and folders of the user's own meshes.

``make_object_set("seen", seed)`` / ``load_mesh_folder(path)`` give an :class:`ObjectSet`;
``ObjectSet.select_pool(P, rotation, seed)`` picks the P shapes of one scene build;
``spawner_cfg(shape, ...)`` turns a shape into an Isaac Lab spawner (imports Isaac Lab only when called).
"""

from __future__ import annotations

from pathlib import Path

from dexrl.config import ConfigError

from .mesh_import import ObjectSetError, default_cache_dir, load_mesh_file, load_mesh_folder
from .procedural import SetParams, load_set_params, make_object_set
from .shapes import KINDS, PROCEDURAL_KINDS, ObjectSet, ShapeSpec
from .spawn import shape_usd, spawner_cfg

__all__ = [
    "KINDS",
    "PROCEDURAL_KINDS",
    "ObjectSet",
    "ObjectSetError",
    "SetParams",
    "ShapeSpec",
    "default_cache_dir",
    "load_mesh_file",
    "load_mesh_folder",
    "load_object_set",
    "load_set_params",
    "make_object_set",
    "shape_usd",
    "spawner_cfg",
]


def load_object_set(name_or_folder: str, seed: int = 0) -> ObjectSet:
    """A procedural set of ``config/objects.yaml`` (from ``seed``), or a folder of mesh files.

    Raises:
        ConfigError: neither a procedural set nor a folder (the message lists the sets).
        ObjectSetError: a mesh file of the folder cannot become an object.
    """
    sets = load_set_params()
    if name_or_folder in sets:
        return make_object_set(name_or_folder, seed, params=sets[name_or_folder])
    if Path(name_or_folder).expanduser().is_dir():
        return load_mesh_folder(Path(name_or_folder).expanduser())
    raise ConfigError(
        f"objects.object_set: {name_or_folder!r} is neither a procedural set ({', '.join(sorted(sets))}) "
        "nor a folder of meshes"
    )
