"""Shape descriptions of graspable objects and the named sets they form.

A :class:`ShapeSpec` is a kind plus its parameters (lengths in metres). From them it builds two meshes,
both in the shape's own frame with the origin at the centre of its axis-aligned bounding box:

- :meth:`ShapeSpec.mesh`: the visible surface (what the depth camera sees);
- :meth:`ShapeSpec.convex_parts`: convex pieces whose union is what the physics engine collides. For the
  compound kinds the visible surface *is* the union of the pieces, so the camera and the physics agree.

Kinds and their parameters:

=========  ==============================================================================================
box        ``extents`` (3,): full side lengths
cylinder   ``radius``, ``height`` (along z)
capsule    ``radius``, ``height`` (of the cylindrical part along z, caps excluded, as in USD)
sphere     ``radius``
cone       ``radius`` (of the base), ``height`` (along z)
hull       ``points`` (N, 3): the shape is their convex hull
plate      ``polygon`` (N, 2): outline in the xy plane (its convex hull is used), ``thickness`` (along z)
l_shape    ``length`` (x), ``width`` (y), ``bar`` (width of both arms), ``thickness`` (z)
t_shape    ``length`` (x, the top bar), ``width`` (y), ``bar`` (width of top bar and stem), ``thickness``
blob       ``centres`` (K, 3), ``semi_axes`` (K, 3): union of overlapping axis-aligned ellipsoids
ring       ``outer_radius``, ``inner_radius``, ``thickness`` (z), ``segments`` (int): convex sectors
star       ``rays`` (int), ``outer_radius`` (tips), ``inner_radius`` (notches), ``thickness`` (z)
mesh       ``vertices`` (V, 3), ``faces`` (F, 3), ``hulls`` (tuple of (n, 3) point sets): a mesh brought by
           the user and its convex decomposition, already centred on their joint bounding box
=========  ==============================================================================================

Integer parameters are counts; every float parameter is a length, so :meth:`ShapeSpec.scaled` can resize
any procedural shape by multiplying them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import trimesh

from dexrl.config import ConfigError

__all__ = [
    "COMPOUND_KINDS",
    "CONVEX_KINDS",
    "KINDS",
    "PRIMITIVE_KINDS",
    "PROCEDURAL_KINDS",
    "ObjectSet",
    "ShapeSpec",
]

PRIMITIVE_KINDS = ("box", "cylinder", "capsule", "sphere")
"""Kinds that Newton / MuJoCo collide as native primitives."""

CONVEX_KINDS = (*PRIMITIVE_KINDS, "cone", "hull", "plate")
"""Kinds that are a single convex solid (MuJoCo has no cone primitive: a cone is a convex mesh)."""

COMPOUND_KINDS = ("l_shape", "t_shape", "blob", "ring", "star")
"""Non-convex procedural kinds, built as unions of convex pieces."""

PROCEDURAL_KINDS = (*CONVEX_KINDS, *COMPOUND_KINDS)
KINDS = (*PROCEDURAL_KINDS, "mesh")

GEOMETRY_VERSION = 1
"""Bumped whenever a kind's parameters or its tessellation change meaning (part of every shape's digest, so
cached USD files of the old geometry are not reused)."""

_REQUIRED = {
    "box": ("extents",),
    "cylinder": ("radius", "height"),
    "capsule": ("radius", "height"),
    "sphere": ("radius",),
    "cone": ("radius", "height"),
    "hull": ("points",),
    "plate": ("polygon", "thickness"),
    "l_shape": ("length", "width", "bar", "thickness"),
    "t_shape": ("length", "width", "bar", "thickness"),
    "blob": ("centres", "semi_axes"),
    "ring": ("outer_radius", "inner_radius", "thickness", "segments"),
    "star": ("rays", "outer_radius", "inner_radius", "thickness"),
    "mesh": ("vertices", "faces", "hulls"),
}

ParamValue = float | int | np.ndarray | tuple[np.ndarray, ...]


def _frozen_value(value: Any) -> ParamValue:
    """A read-only copy of one parameter value (floats stay lengths, ints stay counts)."""
    if isinstance(value, bool):
        raise TypeError("shape parameters are lengths (float), counts (int) or arrays, not booleans")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, tuple) and value and all(isinstance(v, np.ndarray) for v in value):
        return tuple(_frozen_value(v) for v in value)
    array = np.array(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"unsupported shape parameter {value!r}")
    array.setflags(write=False)
    return array


def _hash_value(h: Any, value: ParamValue) -> None:
    if isinstance(value, tuple):
        h.update(f"tuple{len(value)}".encode())
        for item in value:
            _hash_value(h, item)
    elif isinstance(value, np.ndarray):
        dtype = np.float64 if value.dtype.kind == "f" else np.int64
        h.update(f"{value.shape}".encode() + np.ascontiguousarray(value, dtype=dtype).tobytes())
    else:
        h.update(repr(value).encode())


def _box_at(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> trimesh.Trimesh:
    """The axis-aligned box between corners ``lo`` and ``hi`` [m]."""
    lo_, hi_ = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    return trimesh.creation.box(
        extents=hi_ - lo_, transform=trimesh.transformations.translation_matrix((lo_ + hi_) / 2)
    )


def _prism(outline: np.ndarray, thickness: float) -> trimesh.Trimesh:
    """The convex prism over the convex hull of a 2-D outline (N, 2), centred on z = 0."""
    outline = np.asarray(outline, dtype=np.float64)
    bottom = np.column_stack([outline, np.full(len(outline), -thickness / 2)])
    top = np.column_stack([outline, np.full(len(outline), thickness / 2)])
    return trimesh.convex.convex_hull(np.vstack([bottom, top]))


def _circle(radius: float, angles: np.ndarray) -> np.ndarray:
    return radius * np.column_stack([np.cos(angles), np.sin(angles)])


def _convex_pieces(kind: str, p: Mapping[str, ParamValue]) -> list[trimesh.Trimesh]:
    """Convex pieces of a shape before centring (each watertight)."""
    if kind == "box":
        return [trimesh.creation.box(extents=p["extents"])]
    if kind == "cylinder":
        return [trimesh.creation.cylinder(radius=p["radius"], height=p["height"], sections=32)]
    if kind == "capsule":
        return [trimesh.creation.capsule(height=p["height"], radius=p["radius"], count=(16, 16))]
    if kind == "sphere":
        return [trimesh.creation.icosphere(subdivisions=3, radius=p["radius"])]
    if kind == "cone":
        cone = trimesh.creation.cone(radius=p["radius"], height=p["height"], sections=32)
        return [cone.apply_translation((0.0, 0.0, -p["height"] / 2))]
    if kind == "hull":
        return [trimesh.convex.convex_hull(p["points"])]
    if kind == "plate":
        return [_prism(p["polygon"], p["thickness"])]
    if kind in ("l_shape", "t_shape"):
        length, width, bar, t = p["length"], p["width"], p["bar"], p["thickness"]
        x0, y0, z0 = -length / 2, -width / 2, -t / 2
        if (
            kind == "l_shape"
        ):  # a bar along x at y = -width/2 and an arm along y at x = -length/2, not overlapping
            return [
                _box_at((x0, y0, z0), (-x0, y0 + bar, -z0)),
                _box_at((x0, y0 + bar, z0), (x0 + bar, -y0, -z0)),
            ]
        return [
            _box_at((x0, -y0 - bar, z0), (-x0, -y0, -z0)),
            _box_at((-bar / 2, y0, z0), (bar / 2, -y0 - bar, -z0)),
        ]
    if kind == "blob":
        pieces = []
        for centre, axes in zip(p["centres"], p["semi_axes"]):
            ellipsoid = trimesh.creation.icosphere(
                subdivisions=1, radius=1.0
            )  # 42 vertices: within Newton's hull limit
            ellipsoid.apply_scale(axes)
            pieces.append(ellipsoid.apply_translation(centre))
        return pieces
    if kind == "ring":
        n, step = p["segments"], 2 * math.pi / p["segments"]
        pieces = []
        for k in range(n):
            outer = _circle(p["outer_radius"], step * (k + np.array([0.0, 0.5, 1.0])))
            inner = _circle(p["inner_radius"], step * (k + np.array([0.0, 1.0])))
            pieces.append(_prism(np.vstack([outer, inner]), p["thickness"]))
        return pieces
    if kind == "star":
        n, step = p["rays"], 2 * math.pi / p["rays"]
        notches = _circle(p["inner_radius"], step * (np.arange(n) + 0.5))
        tips = _circle(p["outer_radius"], step * np.arange(n))
        # One convex kite per ray (tip, both notches, centre): each notch's reflex angle is split in half.
        return [
            _prism(np.vstack([tips[k], notches[k - 1], (0.0, 0.0), notches[k]]), p["thickness"])
            for k in range(n)
        ]
    if kind == "mesh":
        return [trimesh.convex.convex_hull(points) for points in p["hulls"]]
    raise ValueError(f"unknown shape kind {kind!r}")


def _analytic_extents(kind: str, p: Mapping[str, ParamValue]) -> np.ndarray | None:
    """Exact extents of the round primitives (their tessellations are slightly smaller); None otherwise."""
    if kind == "sphere":
        return np.full(3, 2 * p["radius"])
    if kind == "capsule":
        return np.array([2 * p["radius"], 2 * p["radius"], p["height"] + 2 * p["radius"]])
    if kind == "cylinder":
        return np.array([2 * p["radius"], 2 * p["radius"], p["height"]])
    return None


def _bounds(meshes: list[trimesh.Trimesh]) -> np.ndarray:
    points = np.concatenate([m.vertices for m in meshes])
    return np.stack([points.min(axis=0), points.max(axis=0)])


@dataclass(frozen=True, eq=False)
class ShapeSpec:
    """One object shape (immutable; shapes are equal when their :meth:`digest` is).

    Attributes:
        name: unique within its set; used in file names (letters, digits, ``_``, ``-``, ``.``).
        kind: one of :data:`KINDS`.
        params: the kind's parameters (see the module docstring), lengths in metres, read-only.
        size: axis-aligned extents (x, y, z) of the shape in its own frame [m].
        source: the file a user-brought mesh came from, else None.
    """

    name: str
    kind: str
    params: Mapping[str, ParamValue]
    size: tuple[float, float, float]
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"shape {self.name!r}: unknown kind {self.kind!r}; kinds are {', '.join(KINDS)}")
        if not self.name or not all(c.isalnum() or c in "_-." for c in self.name):
            raise ValueError(f"shape name {self.name!r} must be non-empty letters, digits, '_', '-' or '.'")
        missing = [key for key in _REQUIRED[self.kind] if key not in self.params]
        if missing:
            raise ValueError(f"shape {self.name!r} ({self.kind}) lacks parameters {missing}")
        object.__setattr__(
            self, "params", MappingProxyType({k: _frozen_value(v) for k, v in self.params.items()})
        )
        size = tuple(float(v) for v in self.size)
        if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
            raise ValueError(
                f"shape {self.name!r}: size must be three positive extents [m], got {self.size!r}"
            )
        object.__setattr__(self, "size", size)

    @classmethod
    def build(cls, name: str, kind: str, params: Mapping[str, Any], source: str | None = None) -> ShapeSpec:
        """A shape with ``size`` measured from its parameters."""
        if kind not in KINDS:
            raise ValueError(f"shape {name!r}: unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        extents = _analytic_extents(kind, params)
        if extents is None:
            meshes = _convex_pieces(kind, params)
            if kind == "mesh":
                meshes.append(trimesh.Trimesh(params["vertices"], params["faces"], process=False))
            lo, hi = _bounds(meshes)
            extents = hi - lo
        return cls(name=name, kind=kind, params=params, size=tuple(extents), source=source)

    @property
    def max_extent(self) -> float:
        """Largest side of the bounding box [m]."""
        return max(self.size)

    @property
    def is_primitive(self) -> bool:
        """Whether the physics engine collides this shape as one native primitive."""
        return self.kind in PRIMITIVE_KINDS

    @property
    def is_convex(self) -> bool:
        return self.kind in CONVEX_KINDS or (self.kind == "mesh" and len(self.params["hulls"]) == 1)

    def scaled(self, factor: float) -> ShapeSpec:
        """The same procedural shape with every length multiplied by ``factor``."""
        if self.kind == "mesh":
            raise ValueError(f"shape {self.name!r}: scale a user mesh when loading it (target_size=)")
        params = {k: v if isinstance(v, int) else v * factor for k, v in self.params.items()}
        return ShapeSpec(self.name, self.kind, params, tuple(s * factor for s in self.size), self.source)

    def convex_parts(self) -> list[trimesh.Trimesh]:
        """The convex collision pieces (watertight meshes) in the shape frame [m]."""
        pieces = _convex_pieces(self.kind, self.params)
        if self.kind in ("mesh", *PRIMITIVE_KINDS, "cone"):  # already centred on their bounding box
            return pieces
        offset = -_bounds(pieces).mean(axis=0)
        return [piece.apply_translation(offset) for piece in pieces]

    def mesh(self) -> trimesh.Trimesh:
        """The visible surface in the shape frame [m]: the user's mesh, the convex solid, or the union of
        the convex pieces of a compound shape."""
        if self.kind == "mesh":
            return trimesh.Trimesh(self.params["vertices"], self.params["faces"], process=False)
        parts = self.convex_parts()
        if len(parts) == 1:
            return parts[0]
        return trimesh.boolean.union(parts, engine="manifold")

    def digest(self) -> str:
        """16 hex digits that change whenever the geometry (or the name) changes."""
        h = hashlib.sha256(f"v{GEOMETRY_VERSION}|{self.name}|{self.kind}".encode())
        for key in sorted(self.params):
            h.update(key.encode())
            _hash_value(h, self.params[key])
        return h.hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShapeSpec) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())


@dataclass
class ObjectSet:
    """A named list of shapes with unique names.

    Attributes:
        name: "seen", "novel", another procedural set of ``config/objects.yaml``, or the folder's name.
        shapes: the shapes, in a fixed order.
    """

    name: str
    shapes: list[ShapeSpec]

    def __post_init__(self) -> None:
        names = [s.name for s in self.shapes]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"object set {self.name!r}: duplicate shape names {duplicates[:5]}")

    def __len__(self) -> int:
        return len(self.shapes)

    def select_pool(self, pool_size: int, rotation: int = 0, seed: int = 0) -> list[ShapeSpec]:
        """``pool_size`` distinct shapes for one scene build, a pure function of (seed, rotation).

        The set is shuffled once by ``seed`` and read in consecutive blocks of ``pool_size`` (wrapping at the
        end): rotation r takes block r, so successive rotations go through every shape before any repeats.

        Raises:
            ConfigError: ``pool_size`` is not within [1, len(shapes)], or ``rotation`` / ``seed`` is negative.
        """
        if not 1 <= pool_size <= len(self.shapes):
            raise ConfigError(
                f"objects.pool_size must lie within [1, {len(self.shapes)}] "
                f"(the shapes of set {self.name!r}), "
                f"got {pool_size}"
            )
        if rotation < 0:
            raise ConfigError(f"objects.rotation must be >= 0, got {rotation}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        order = np.random.default_rng(seed).permutation(len(self.shapes))
        start = (rotation * pool_size) % len(self.shapes)
        return [self.shapes[i] for i in np.roll(order, -start)[:pool_size]]
