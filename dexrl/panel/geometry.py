"""3D geometry for the panel: the bin's boxes and grasp colours; jaw glyphs come from :mod:`dexrl.app.drawing`."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from dexrl.app.drawing import jaw_segments

__all__ = ["bin_boxes", "jaw_segments", "q_colors"]


def q_colors(q: np.ndarray) -> np.ndarray:
    """(n,) qualities in [0, 1] -> (n, 3) uint8 colours, red (0) to green (1)."""
    return (colormaps["RdYlGn"](np.clip(q, 0, 1))[:, :3] * 255).astype(np.uint8)


def bin_boxes(
    interior_size: tuple[float, float], floor_z: float, wall_height: float, thickness: float
) -> list[tuple[str, tuple[float, float, float], tuple[float, float, float]]]:
    """(name, dimensions, centre) [m] of the bin's floor and four walls, env-local."""
    length, width = interior_size
    z = floor_z + wall_height / 2
    outer_x, outer_y = length + 2 * thickness, width + 2 * thickness
    return [
        ("floor", (outer_x, outer_y, 0.01), (0.0, 0.0, floor_z - 0.005)),
        ("wall_x_neg", (thickness, outer_y, wall_height), (-(length + thickness) / 2, 0.0, z)),
        ("wall_x_pos", (thickness, outer_y, wall_height), ((length + thickness) / 2, 0.0, z)),
        ("wall_y_neg", (length, thickness, wall_height), (0.0, -(width + thickness) / 2, z)),
        ("wall_y_pos", (length, thickness, wall_height), (0.0, (width + thickness) / 2, z)),
    ]
