"""Shape descriptions of graspable objects: compounds of primitives and convex meshes.

Every shape is a list of *parts* in the shape's own frame (metres), each a primitive (box, sphere, cylinder,
capsule; axes along the part's local Z) or a convex mesh (vertices + faces). Non-convex shapes (L/T
compounds, rings, stars, blobs) are unions of convex parts, which is what the physics engine collides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Part", "ShapeSpec"]


@dataclass(frozen=True)
class Part:
    """One convex collider of a shape.

    Attributes:
        kind: "box" (size = full extents x, y, z), "sphere" (radius), "cylinder" / "capsule" (radius, height along
            local Z; a capsule's height excludes its caps), or "mesh" (vertices (V, 3), faces (F, 3) of a convex hull).
        translation: part centre in the shape frame [m].
        rotation: part orientation as a (w, x, y, z) quaternion (USD's order).
    """

    kind: str
    size: tuple[float, ...] = ()
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    vertices: np.ndarray | None = field(default=None, compare=False, repr=False)
    faces: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ShapeSpec:
    """A named object shape.

    Attributes:
        name: unique within its set. kind: generator family (e.g. "box", "ring", "mesh:<file>").
        parts: convex colliders. size: axis-aligned extents of the whole shape [m].
        source: the file it was imported from, for meshes brought by the user.
    """

    name: str
    kind: str
    parts: tuple[Part, ...]
    size: tuple[float, float, float]
    source: str | None = None

    @property
    def max_extent(self) -> float:
        return max(self.size)

    @property
    def round(self) -> bool:
        """Whether the shape can roll (spheres, cylinders, capsules, cones): those need rolling resistance."""
        return self.kind in ("sphere", "cylinder", "capsule", "cone")
