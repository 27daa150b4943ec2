"""Where the Franka arm can grasp top-down in the bin: batched IK over a grid of the bin interior.

For each cell of a grid over the bin's inner floor and a margin around it, each TCP height and each jaw yaw in [-90, 90) degrees,
the arm's IK (the executor's own, :class:`~dexrl.sim.mounts.FrankaMount`) solves the top-down pose; a pose is
reachable when the solution lies within the position and angle tolerances and inside the joint limits. The
map is kinematic: it says nothing of the wrist touching a wall on the way down (the executor's contact sensor
judges that as a collision).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .franka import FrankaCfg, write_franka_usd
from .gripper import GripperCfg
from .mounts import FrankaMount
from .scene_cfg import SceneSettingsCfg

__all__ = ["ReachMap", "reach_map", "reach_picture"]


@dataclass
class ReachMap:
    """Fraction of jaw yaws reachable per cell: ``fraction[h, j, i]`` at ``heights[h]``, ``ys[j]``, ``xs[i]``."""

    xs: np.ndarray  # (X,) env-local cell centres [m]
    ys: np.ndarray  # (Y,)
    heights: np.ndarray  # (H,) TCP heights above the bin floor [m]
    yaws: np.ndarray  # (A,) jaw yaws [rad]
    fraction: np.ndarray  # (H, Y, X) in [0, 1]

    def as_dict(self) -> dict:
        return {
            "xs_m": self.xs.round(4).tolist(),
            "ys_m": self.ys.round(4).tolist(),
            "heights_above_floor_m": self.heights.round(4).tolist(),
            "yaws_deg": np.degrees(self.yaws).round(1).tolist(),
            "reachable_fraction_per_height": self.fraction.mean(axis=(1, 2)).round(4).tolist(),
            "fraction": self.fraction.round(3).tolist(),
        }


def reach_map(settings: SceneSettingsCfg, gripper: GripperCfg, asset_folder: str | Path, spacing: float = 0.025,
              margin: float = 0.2, heights: tuple[float, ...] = (0.01, 0.06, 0.17), yaw_samples: int = 8) -> ReachMap:
    """IK reachability of the bin interior and ``margin`` [m] around it (cells ``spacing`` apart, TCP ``heights``
    above the floor [m])."""
    franka: FrankaCfg = settings.franka
    half_x, half_y = (size / 2 + margin for size in settings.bin.interior_size)
    xs = np.arange(-half_x + spacing / 2, half_x, spacing)
    ys = np.arange(-half_y + spacing / 2, half_y, spacing)
    yaws = np.linspace(-math.pi / 2, math.pi / 2, yaw_samples, endpoint=False)
    floor = settings.bin.floor_z
    grid = torch.tensor(list(itertools.product(heights, ys, xs, yaws)), dtype=torch.float32)
    position = torch.stack((grid[:, 2], grid[:, 1], floor + grid[:, 0]), dim=-1)
    home = torch.tensor([[*franka.home, 0.0, 0.0]])
    mount = FrankaMount(gripper, franka, write_franka_usd(gripper, asset_folder), franka.base_position, home)
    reachable = mount.reachable(position, grid[:, 3]).float()
    fraction = reachable.reshape(len(heights), len(ys), len(xs), len(yaws)).mean(dim=-1).numpy()
    return ReachMap(xs, ys, np.asarray(heights), yaws, fraction)


def reach_picture(reach: ReachMap, interior_size: tuple[float, float], cell_pixels: int = 12) -> np.ndarray:
    """(H, W, 3) uint8 picture: one panel per height, cells from red (no yaw reachable) to green (every yaw), the
    bin's interior outlined in white, the arm's side at the left (-x), +y up."""
    spacing = float(reach.xs[1] - reach.xs[0])
    # Pixel columns / rows of the interior's edges (rows counted from the top, +y up).
    left, right = ((edge - reach.xs[0] + spacing / 2) / spacing * cell_pixels for edge in (-interior_size[0] / 2, interior_size[0] / 2))
    top, bottom = ((reach.ys[-1] + spacing / 2 - edge) / spacing * cell_pixels for edge in (interior_size[1] / 2, -interior_size[1] / 2))
    left, right, top, bottom = (int(round(v)) for v in (left, right, top, bottom))
    panels = []
    for fraction in reach.fraction:
        rgb = np.stack((1.0 - fraction, fraction, np.zeros_like(fraction)), axis=-1)[::-1]  # +y up
        panel = np.kron(rgb, np.ones((cell_pixels, cell_pixels, 1)))
        panel[top:bottom, [left, right - 1]] = 1.0
        panel[[top, bottom - 1], left:right] = 1.0
        panels.append(np.pad(panel, ((8, 8), (8, 8), (0, 0)), constant_values=0.0))
    return (np.concatenate(panels, axis=1) * 255).astype(np.uint8)
