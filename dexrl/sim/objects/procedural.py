"""Seeded procedural object sets, defined in ``config/objects.yaml``.

- ``seen``: boxes, cylinders, capsules, spheres, cones, random convex hulls, compound L and T shapes; largest
  extent 2.5-10 cm.
- ``novel``: smaller (1.5-4 cm) and more abstract: non-convex blobs, thin plates, rings, star prisms.

Each set is a pure function of (set name, seed): shape i draws from its own generator seeded with
(seed, set name, i), so its geometry does not depend on how many shapes the set has. The largest extent of
every shape is drawn uniformly from the set's ``size_range`` and met exactly.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dexrl.config import CONFIG_DIR, ConfigError, load_yaml

from .shapes import PROCEDURAL_KINDS, ObjectSet, ShapeSpec

__all__ = ["OBJECTS_CONFIG", "SIZE_LIMITS", "SetParams", "load_set_params", "make_object_set", "make_shape"]

OBJECTS_CONFIG = CONFIG_DIR / "objects.yaml"
"""The user-facing definition of the procedural sets."""

SIZE_LIMITS = (0.005, 0.5)
"""Allowed largest extents of procedural shapes [m]."""

MIN_THICKNESS_LOW = 0.0005
"""Thinnest allowed ``min_thickness`` [m]."""

MAX_COUNT = 100_000


@dataclass(frozen=True)
class SetParams:
    """Parameters of one procedural set (see ``config/objects.yaml``).

    Attributes:
        count: number of shapes.
        size_range: (min, max) of the largest extent of a shape [m].
        min_thickness: thinnest side of boxes, cylinders, cones, plates, bars, rings and star prisms [m].
        kinds: kind -> relative weight; each kind gets its share of ``count`` (largest remainder).
    """

    count: int = 240
    size_range: tuple[float, float] = (0.03, 0.08)
    min_thickness: float = 0.012
    kinds: Mapping[str, float] = field(default_factory=lambda: {k: 1.0 for k in PROCEDURAL_KINDS})

    def check(self, key: str) -> None:
        """Raise :class:`ConfigError` naming ``<key>.<field>`` and the allowed range for a bad value."""
        if (
            isinstance(self.count, bool)
            or not isinstance(self.count, int)
            or not 1 <= self.count <= MAX_COUNT
        ):
            raise ConfigError(f"{key}.count must be an integer within [1, {MAX_COUNT}], got {self.count!r}")
        low, high = SIZE_LIMITS
        size_range = self.size_range
        if (
            not isinstance(size_range, (tuple, list))
            or len(size_range) != 2
            or not all(map(_is_number, size_range))
        ):
            raise ConfigError(
                f"{key}.size_range must be a [min, max] pair of numbers [m], got {size_range!r}"
            )
        if not all(low <= v <= high for v in size_range):
            raise ConfigError(f"{key}.size_range must lie within [{low}, {high}] m, got {list(size_range)}")
        if size_range[0] > size_range[1]:
            raise ConfigError(f"{key}.size_range: min {size_range[0]} is greater than max {size_range[1]}")
        thickest = size_range[0] / 2
        if not _is_number(self.min_thickness) or not MIN_THICKNESS_LOW <= self.min_thickness <= thickest:
            raise ConfigError(
                f"{key}.min_thickness must lie within [{MIN_THICKNESS_LOW}, {thickest}] m "
                f"(half the smallest size), "
                f"got {self.min_thickness!r}"
            )
        if not isinstance(self.kinds, Mapping) or not self.kinds:
            raise ConfigError(f"{key}.kinds must map kinds to weights, got {self.kinds!r}")
        for kind, weight in self.kinds.items():
            if kind not in PROCEDURAL_KINDS:
                raise ConfigError(
                    f"{key}.kinds: unknown kind {kind!r}; kinds are {', '.join(PROCEDURAL_KINDS)}"
                )
            if not _is_number(weight) or weight < 0:
                raise ConfigError(f"{key}.kinds.{kind} must be a weight >= 0, got {weight!r}")
        if not any(weight > 0 for weight in self.kinds.values()):
            raise ConfigError(f"{key}.kinds needs at least one kind with a weight > 0")

    @classmethod
    def from_mapping(cls, key: str, values: Any) -> SetParams:
        """Validated parameters from the YAML mapping of set ``key``."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{key} must be a mapping of {', '.join(cls.__dataclass_fields__)}; got {values!r}"
            )
        known = cls.__dataclass_fields__
        unknown = [name for name in values if name not in known]
        if unknown:
            raise ConfigError(f"unknown config key '{key}.{unknown[0]}'; keys are {', '.join(known)}")
        fields = dict(values)
        if isinstance(fields.get("size_range"), list):
            fields["size_range"] = tuple(fields["size_range"])
        params = cls(**fields)
        params.check(key)
        return params


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_set_params(path: str | Path = OBJECTS_CONFIG) -> dict[str, SetParams]:
    """The procedural sets defined in ``path`` (set name -> validated parameters).

    Raises:
        ConfigError: naming the file and the offending key.
    """
    try:
        return {
            str(name): SetParams.from_mapping(str(name), values) for name, values in load_yaml(path).items()
        }
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


# ---------------------------------------------------------------------------------------------- generators
# Each takes the target largest extent `size` [m], the set's `min_thickness` [m] and a generator, and returns
# the kind's parameters; make_shape then scales them so that the largest extent is exactly `size`.


def _box(size: float, thin: float, rng: np.random.Generator) -> dict:
    return {
        "extents": [size, max(size * rng.uniform(0.3, 1.0), thin), max(size * rng.uniform(0.25, 1.0), thin)]
    }


def _solid_of_revolution(size: float, thin: float, rng: np.random.Generator, low: float, high: float) -> dict:
    """Radius and height of a solid whose height / diameter is log-uniform in [low, high]."""
    aspect = math.exp(rng.uniform(math.log(low), math.log(high)))
    if aspect >= 1.0:
        return {"radius": max(size / (2 * aspect), thin / 2), "height": size}
    return {"radius": size / 2, "height": max(size * aspect, thin)}


def _cylinder(size: float, thin: float, rng: np.random.Generator) -> dict:
    return _solid_of_revolution(size, thin, rng, 0.25, 3.0)


def _cone(size: float, thin: float, rng: np.random.Generator) -> dict:
    """Height / base diameter in [0.5, 1.5]: slender cones faulted far more often in heaps."""
    return _solid_of_revolution(size, thin, rng, 0.5, 1.5)


def _capsule(size: float, thin: float, rng: np.random.Generator) -> dict:
    radius = max(size * rng.uniform(0.12, 0.3), 0.51 * thin)
    return {"radius": radius, "height": size - 2 * radius}


def _sphere(size: float, thin: float, rng: np.random.Generator) -> dict:
    return {"radius": size / 2}


def _hull(size: float, thin: float, rng: np.random.Generator) -> dict:
    """8-20 random points stretched to aspect ratios >= 0.45: slivers spin up without bound in MuJoCo."""
    points = rng.normal(size=(int(rng.integers(8, 21)), 3))
    points /= points.max(axis=0) - points.min(axis=0)
    stretch = np.maximum([1.0, rng.uniform(0.55, 1.0), rng.uniform(0.45, 0.9)], 1.2 * thin / size)
    return {"points": points * stretch * size}


def _plate(size: float, thin: float, rng: np.random.Generator) -> dict:
    count = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, count))
    outline = rng.uniform(0.75, 1.0, (count, 1)) * np.column_stack([np.cos(angles), np.sin(angles)])
    outline *= [1.0, rng.uniform(0.5, 1.0)]
    outline *= size / (outline.max(axis=0) - outline.min(axis=0)).max()
    return {"polygon": outline, "thickness": max(size * rng.uniform(0.1, 0.2), thin)}


def _bars(size: float, thin: float, rng: np.random.Generator) -> dict:
    """L and T shapes: two bars in the xy plane."""
    return {
        "length": size,
        "width": size * rng.uniform(0.5, 1.0),
        "bar": max(size * rng.uniform(0.2, 0.35), thin),
        "thickness": max(size * rng.uniform(0.15, 0.35), thin),
    }


def _blob(size: float, thin: float, rng: np.random.Generator) -> dict:
    """3-6 ellipsoids, each overlapping one placed before it (so the union is one connected lump)."""
    count = int(rng.integers(3, 7))
    axes = rng.uniform(0.35, 0.8, (count, 3))
    centres = np.zeros((count, 3))
    for i in range(1, count):
        j = int(rng.integers(0, i))
        direction = rng.normal(size=3)
        reach = rng.uniform(0.5, 0.9) * (axes[i].min() + axes[j].min())
        centres[i] = centres[j] + reach * direction / np.linalg.norm(direction)
    return {"centres": centres * size, "semi_axes": axes * size}


def _ring(size: float, thin: float, rng: np.random.Generator) -> dict:
    outer = size / 2
    return {
        "outer_radius": outer,
        "inner_radius": outer - max(outer * rng.uniform(0.25, 0.5), thin),
        "thickness": max(size * rng.uniform(0.12, 0.35), thin),
        "segments": int(rng.integers(6, 10)),
    }


def _star(size: float, thin: float, rng: np.random.Generator) -> dict:
    outer = size / 2
    return {
        "rays": int(rng.integers(4, 7)),
        "outer_radius": outer,
        "inner_radius": outer * rng.uniform(0.35, 0.6),
        "thickness": max(size * rng.uniform(0.15, 0.4), thin),
    }


GENERATORS: dict[str, Callable[[float, float, np.random.Generator], dict]] = {
    "box": _box,
    "cylinder": _cylinder,
    "capsule": _capsule,
    "sphere": _sphere,
    "cone": _cone,
    "hull": _hull,
    "plate": _plate,
    "l_shape": _bars,
    "t_shape": _bars,
    "blob": _blob,
    "ring": _ring,
    "star": _star,
}
"""One generator per procedural kind."""


def make_shape(
    name: str, kind: str, size: float, rng: np.random.Generator, min_thickness: float = 0.003
) -> ShapeSpec:
    """One random shape of ``kind`` whose largest extent is ``size`` [m] (features >= ``min_thickness``)."""
    if kind not in GENERATORS:
        raise ConfigError(f"unknown shape kind {kind!r}; kinds are {', '.join(PROCEDURAL_KINDS)}")
    shape = ShapeSpec.build(name, kind, GENERATORS[kind](size, min_thickness, rng))
    return (
        shape if math.isclose(shape.max_extent, size, rel_tol=1e-9) else shape.scaled(size / shape.max_extent)
    )


def _kind_sequence(kinds: Mapping[str, float], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` kinds in proportion to their weights (largest remainder), in a seeded random order."""
    names = [k for k, w in kinds.items() if w > 0]
    quotas = np.array([kinds[k] for k in names], dtype=np.float64)
    quotas *= count / quotas.sum()
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(counts - quotas, kind="stable")[: count - counts.sum()]:
        counts[i] += 1
    sequence = [k for k, c in zip(names, counts) for _ in range(c)]
    return [sequence[i] for i in rng.permutation(count)]


def make_object_set(name: str, seed: int = 0, *, params: SetParams | None = None) -> ObjectSet:
    """The procedural set ``name`` generated from ``seed``.

    Args:
        name: a set of ``config/objects.yaml`` ("seen", "novel", ...), or any name when ``params`` is given.
        seed: non-negative integer; the same (name, seed, params) always gives the same shapes.
        params: the set's parameters; by default read from ``config/objects.yaml``.

    Raises:
        ConfigError: unknown set name, negative seed, or a bad value in the set's parameters.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if params is None:
        sets = load_set_params()
        if name not in sets:
            raise ConfigError(
                f"unknown object set {name!r}: the procedural sets are {', '.join(sorted(sets))} "
                f"({OBJECTS_CONFIG.name}); objects.object_set may also name a folder of meshes"
            )
        params = sets[name]
    else:
        params.check(name)
    set_key = zlib.crc32(name.encode())
    kinds = _kind_sequence(params.kinds, params.count, np.random.default_rng([seed, set_key]))
    low, high = params.size_range
    shapes = []
    for index, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, set_key, index])
        size = float(rng.uniform(low, high))
        shapes.append(make_shape(f"{name}_{index:03d}_{kind}", kind, size, rng, params.min_thickness))
    return ObjectSet(name=name, shapes=shapes)
