"""Seeded procedural object sets.

- ``seen``: boxes, cylinders, capsules, spheres, cones, random convex hulls, compound L and T shapes; largest
  extent 2.5-10 cm.
- ``novel``: smaller (1.5-4 cm) and more abstract: non-convex blobs, thin plates, rings, star prisms.

Each set has 240 distinct shapes (``SET_SIZE``), a pure function of (set name, seed). A scene build draws its
per-env pool from them with :meth:`ObjectSet.select_pool`; changing ``rotation`` picks other shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh

from dexrl.config import ConfigError

from .shapes import Part, ShapeSpec

__all__ = ["ObjectSet", "SET_SIZE", "SIZE_RANGES", "make_object_set"]

SET_SIZE = 240
"""Shapes per procedural set."""

SIZE_RANGES = {"seen": (0.025, 0.10), "novel": (0.015, 0.04)}
"""Largest extent of the shapes of each procedural set [m]."""

SEEN_KINDS = ("box", "cylinder", "capsule", "sphere", "cone", "hull", "l_shape", "t_shape")
NOVEL_KINDS = ("blob", "plate", "ring", "star")


@dataclass
class ObjectSet:
    """A named list of shapes."""

    name: str
    shapes: list[ShapeSpec]

    def select_pool(self, pool_size: int, rotation: int = 0, seed: int = 0) -> list[ShapeSpec]:
        """``pool_size`` distinct shapes: a seeded permutation of the set, read in blocks; ``rotation`` picks the
        block, so consecutive rotations cycle through every shape before repeating."""
        if pool_size < 1:
            raise ConfigError(f"objects.pool_size must be >= 1, got {pool_size}")
        if pool_size > len(self.shapes):
            raise ConfigError(f"objects.pool_size {pool_size} exceeds the {len(self.shapes)} shapes of set {self.name!r}")
        order = np.random.default_rng(seed).permutation(len(self.shapes))
        start = (rotation * pool_size) % len(self.shapes)
        picks = np.roll(order, -start)[:pool_size]
        return [self.shapes[i] for i in picks]


def _quat_about(axis: str, angle: float) -> tuple[float, float, float, float]:
    half = angle / 2
    c, s = math.cos(half), math.sin(half)
    return {"x": (c, s, 0.0, 0.0), "y": (c, 0.0, s, 0.0), "z": (c, 0.0, 0.0, s)}[axis]


def _extent(parts: list[Part]) -> tuple[float, float, float]:
    """Axis-aligned extents of a shape from a sampled surface of its parts."""
    points = np.concatenate([_part_points(part) for part in parts])
    return tuple(float(v) for v in points.max(0) - points.min(0))


def _part_points(part: Part) -> np.ndarray:
    if part.kind == "mesh":
        local = part.vertices
    elif part.kind == "box":
        local = trimesh.creation.box(extents=part.size).vertices
    elif part.kind == "sphere":
        local = trimesh.creation.icosphere(subdivisions=1, radius=part.size[0]).vertices
    elif part.kind == "cylinder":
        local = trimesh.creation.cylinder(radius=part.size[0], height=part.size[1], sections=16).vertices
    else:  # capsule
        local = trimesh.creation.capsule(radius=part.size[0], height=part.size[1], count=(8, 8)).vertices
    w, x, y, z = part.rotation
    rotation = trimesh.transformations.quaternion_matrix((w, x, y, z))[:3, :3]
    return local @ rotation.T + np.asarray(part.translation)


def _hull(points: np.ndarray) -> Part:
    hull = trimesh.convex.convex_hull(points)
    centre = hull.bounds.mean(axis=0)
    return Part("mesh", vertices=np.asarray(hull.vertices - centre, dtype=np.float64), faces=np.asarray(hull.faces),
                translation=tuple(float(c) for c in centre))


def _seen_parts(kind: str, size: float, rng: np.random.Generator) -> list[Part]:
    """Parts of one seen-set shape whose largest extent is about ``size``."""
    ratio = lambda low, high: rng.uniform(low, high)  # noqa: E731
    if kind == "box":
        return [Part("box", (size, size * ratio(0.3, 1.0), size * ratio(0.25, 0.9)))]
    if kind == "cylinder":
        radius = size * ratio(0.15, 0.5) / 2
        return [Part("cylinder", (radius, size * ratio(0.5, 1.0)))]
    if kind == "capsule":
        radius = size * ratio(0.12, 0.25)
        return [Part("capsule", (radius, max(size - 2 * radius, 0.2 * size)))]
    if kind == "sphere":
        return [Part("sphere", (size / 2,))]
    if kind == "cone":
        radius, height = size * ratio(0.25, 0.5), size * ratio(0.6, 1.0)
        cone = trimesh.creation.cone(radius=radius, height=height, sections=16)
        return [_hull(cone.vertices - np.array([0, 0, height / 2]))]
    if kind == "hull":
        # Random points, stretched per axis to the wanted aspect ratios: a sliver of a hull (one extent far
        # below the others) spins up without bound in MuJoCo once it lies on the floor.
        points = rng.normal(size=(14, 3))
        points /= points.max(0) - points.min(0)
        points *= np.array([1.0, ratio(0.55, 1.0), ratio(0.45, 0.9)]) * size
        return [_hull(points)]
    # Compound L and T shapes: two boxes in the XY plane.
    thickness, bar = size * ratio(0.2, 0.35), size * ratio(0.2, 0.3)
    long = Part("box", (size, bar, thickness))
    if kind == "l_shape":
        leg = size * ratio(0.5, 0.9)
        return [Part("box", (size, bar, thickness), (0.0, -leg / 2 + bar / 2, 0.0)),
                Part("box", (bar, leg, thickness), (-size / 2 + bar / 2, 0.0, 0.0))]
    stem = size * ratio(0.5, 0.9)
    return [Part("box", long.size, (0.0, stem / 2, 0.0)), Part("box", (bar, stem - bar, thickness), (0.0, -bar / 2, 0.0))]


def _novel_parts(kind: str, size: float, rng: np.random.Generator) -> list[Part]:
    """Parts of one novel-set shape whose largest extent is about ``size``."""
    if kind == "plate":
        return [Part("box", (size, size * rng.uniform(0.5, 1.0), size * rng.uniform(0.08, 0.15)))]
    if kind == "blob":  # a cluster of overlapping spheres: non-convex, lumpy
        count = int(rng.integers(3, 6))
        centres = rng.normal(size=(count, 3)) * size * 0.18
        radii = rng.uniform(0.18, 0.3, size=count) * size
        return [Part("sphere", (float(r),), tuple(float(v) for v in c)) for c, r in zip(centres, radii)]
    if kind == "ring":  # a torus approximated by box segments around Z
        segments = int(rng.integers(7, 11))
        radius, tube = size / 2 * 0.8, size * rng.uniform(0.12, 0.2)
        chord = 2 * radius * math.sin(math.pi / segments) * 1.15
        return [
            Part("box", (chord, tube, tube), (radius * math.cos(a), radius * math.sin(a), 0.0), _quat_about("z", a + math.pi / 2))
            for a in np.linspace(0, 2 * math.pi, segments, endpoint=False)
        ]
    # Star prism: a central cylinder and box rays.
    rays = int(rng.integers(4, 7))
    thickness = size * rng.uniform(0.15, 0.3)
    ray_length, ray_width = size / 2, size * rng.uniform(0.12, 0.2)
    parts = [Part("cylinder", (size * 0.18, thickness))]
    for a in np.linspace(0, 2 * math.pi, rays, endpoint=False):
        centre = (ray_length / 2 * math.cos(a), ray_length / 2 * math.sin(a), 0.0)
        parts.append(Part("box", (ray_length, ray_width, thickness), centre, _quat_about("z", float(a))))
    return parts


def make_object_set(name: str, seed: int = 0) -> ObjectSet:
    """The procedural set ``name`` ("seen" or "novel") generated from ``seed``."""
    if name not in SIZE_RANGES:
        raise ConfigError(f"objects.object_set: unknown procedural set {name!r}; use one of {sorted(SIZE_RANGES)} or a folder")
    kinds = SEEN_KINDS if name == "seen" else NOVEL_KINDS
    builder = _seen_parts if name == "seen" else _novel_parts
    low, high = SIZE_RANGES[name]
    rng = np.random.default_rng([seed, len(name), sum(map(ord, name))])
    shapes = []
    for index in range(SET_SIZE):
        kind = kinds[index % len(kinds)]
        size = float(rng.uniform(low, high))
        parts = builder(kind, size, rng)
        shapes.append(ShapeSpec(name=f"{name}_{index:03d}_{kind}", kind=kind, parts=tuple(parts), size=_extent(parts)))
    return ObjectSet(name=name, shapes=shapes)
