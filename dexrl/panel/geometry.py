"""3D line geometry of grasps for the panel: parallel-jaw glyphs and a simple gripper outline."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

__all__ = ["bin_boxes", "jaw_segments", "q_colors"]

JAW_LENGTH = 0.02  # [m] length of the bar drawn for each jaw
FINGER_HEIGHT = 0.05  # [m] how far the drawn fingers reach up from the grasp centre


def q_colors(q: np.ndarray) -> np.ndarray:
    """(n,) qualities in [0, 1] -> (n, 3) uint8 colours, red (0) to green (1)."""
    return (colormaps["RdYlGn"](np.clip(q, 0, 1))[:, :3] * 255).astype(np.uint8)


def jaw_segments(position: np.ndarray, yaw: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Line segments (n * 6, 2, 3) [m] of n top-down grasps: the closing line, a bar at each jaw, each finger
    reaching up and the bridge joining them (a gripper outline).

    Args:
        position: (n, 3) grasp centres [m]. yaw: (n,) jaw axis yaw [rad]. width: (n,) jaw opening [m].
    """
    axis = np.stack((np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)), -1)  # closing direction
    across = np.stack((-np.sin(yaw), np.cos(yaw), np.zeros_like(yaw)), -1)  # along each jaw
    half = (width / 2)[:, None] * axis
    left, right = position - half, position + half
    bar = across * JAW_LENGTH / 2
    up = np.array([0.0, 0.0, FINGER_HEIGHT])
    segments = [
        (left, right),
        (left - bar, left + bar),
        (right - bar, right + bar),
        (left, left + up),
        (right, right + up),
        (left + up, right + up),
    ]
    return np.stack([np.stack(pair, 1) for pair in segments], 1).reshape(-1, 2, 3).astype(np.float32)


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
