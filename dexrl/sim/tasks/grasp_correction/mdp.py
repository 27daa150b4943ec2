"""MDP terms of the one-step grasp-correction task, for all envs at once.

Observation: the planner's best grasp as a feature vector and a depth crop aligned with its jaw axis (what
GQ-CNN looks at, downsampled). Action: a bounded correction (dx, dy, dz, dtheta) in the grasp frame. Reward: 1
for a held lift. Grasp frame: x along the jaw (closing) axis, y across it in the horizontal plane, z down (a
positive dz grasps deeper), theta about the vertical.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from dexrl.grasp import GraspPoses, ImageGrasps, wrap_half_turn

__all__ = [
    "GRASP_FEATURES",
    "corrected_poses",
    "grasp_features",
    "held_lift_reward",
    "jaw_aligned_crops",
    "observation_space",
    "policy_observation",
]

GRASP_FEATURES = ("q", "angle", "height", "u", "v")
"""Names of the grasp feature vector's entries, each scaled to [-1, 1]."""


def jaw_aligned_crops(
    depth: torch.Tensor, grasps: ImageGrasps, window_px: int, size: int, depth_scale: float
) -> torch.Tensor:
    """Depth crops centred on each grasp and turned so that the jaw axis runs along the crop's x axis.

    Args:
        depth: (N, H, W) depth images [m]; 0 marks missing pixels.
        grasps: one image grasp per env, fields of shape (N,).
        window_px: side of the square window of the image the crop covers [px].
        size: side of the returned crop [samples] (nearest-pixel sampling keeps missing pixels exact).
        depth_scale: depth difference mapped to 1 [m].

    Returns:
        (N, 1, size, size) float32 in [-1, 1]: (depth - grasp depth) / depth_scale, clipped; positive is further
        from the camera than the grasp centre (below it). Missing pixels and pixels outside the image read 1.
    """
    n, height, width = depth.shape
    cos, sin = torch.cos(grasps.angle), torch.sin(grasps.angle)
    u, v = grasps.center[:, 0], grasps.center[:, 1]
    theta = torch.zeros(n, 2, 3, device=depth.device, dtype=depth.dtype)
    # output (s, t) in [-1, 1]^2 -> image pixel (u, v) + R(angle) (s, t) window/2, in grid_sample's coordinates
    theta[:, 0, 0], theta[:, 0, 1] = cos * window_px / width, -sin * window_px / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * window_px / height, cos * window_px / height
    theta[:, 0, 2], theta[:, 1, 2] = (2 * u + 1) / width - 1, (2 * v + 1) / height - 1
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    crops = F.grid_sample(depth.unsqueeze(1), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    relative = (crops - grasps.depth.view(n, 1, 1, 1)) / depth_scale
    return torch.where(crops > 0, relative.clamp(-1.0, 1.0), torch.ones_like(relative))


def grasp_features(grasps: ImageGrasps, image_size: tuple[int, int], floor_distance: float, wall_height: float) -> torch.Tensor:
    """(N, 5) float32 in [-1, 1]: q, jaw angle / (pi/2), grasp height above the bin floor / wall height, and the
    centre pixel (u, v) over the image size; see :data:`GRASP_FEATURES`.

    Args:
        image_size: (height, width) [px]. floor_distance: camera to bin floor along the optical axis [m].
        wall_height: bin wall height [m] (a grasp at the wall top reads 1).
    """
    height, width = image_size
    height_above_floor = floor_distance - grasps.depth
    features = torch.stack(
        (
            2 * grasps.q - 1,
            grasps.angle / (math.pi / 2),
            2 * height_above_floor / wall_height - 1,
            2 * (grasps.center[:, 0] + 0.5) / width - 1,
            2 * (grasps.center[:, 1] + 0.5) / height - 1,
        ),
        dim=-1,
    )
    return features.float().clamp(-1.0, 1.0)


def corrected_poses(base: GraspPoses, actions: torch.Tensor, scale: torch.Tensor) -> GraspPoses:
    """Apply a correction in each grasp's frame; a zero action returns ``base`` unchanged.

    Args:
        base: the planner's world-frame grasps, fields of shape (N,).
        actions: (N, 4) in [-1, 1] (clipped here): dx, dy, dz, dtheta as fractions of ``scale``.
        scale: (4,) largest correction: metres along x, y, z and radians about the vertical.
    """
    delta = actions.clamp(-1.0, 1.0) * scale.to(actions)
    cos, sin = torch.cos(base.yaw), torch.sin(base.yaw)
    position = base.position.clone()
    position[:, 0] += delta[:, 0] * cos - delta[:, 1] * sin
    position[:, 1] += delta[:, 0] * sin + delta[:, 1] * cos
    position[:, 2] -= delta[:, 2]
    return GraspPoses(position=position, yaw=wrap_half_turn(base.yaw + delta[:, 3]), width=base.width.clone())


def held_lift_reward(success: torch.Tensor, actions: torch.Tensor, action_penalty: float) -> torch.Tensor:
    """(N,) 1 where the attempt held its lift, else 0, minus ``action_penalty`` times the mean squared action."""
    return success.float() - action_penalty * actions.square().mean(dim=-1)


def observation_space(crop_size: int) -> gym.spaces.Dict:
    """The policy observation's space for crops of ``crop_size`` samples a side."""
    return gym.spaces.Dict(
        {
            "crop": gym.spaces.Box(-1.0, 1.0, (1, crop_size, crop_size), np.float32),
            "grasp": gym.spaces.Box(-1.0, 1.0, (len(GRASP_FEATURES),), np.float32),
        }
    )


def policy_observation(
    depth: torch.Tensor, grasps: ImageGrasps, cfg, floor_distance: float, wall_height: float
) -> dict[str, torch.Tensor]:
    """The policy observation ``{"crop", "grasp"}`` of the planner's best grasps ``grasps`` (fields (N,)) on
    ``depth`` (N, H, W) [m], with the crop parameters of a task cfg (``crop_window_px``, ``crop_size``,
    ``crop_depth_scale``); see :func:`jaw_aligned_crops` and :func:`grasp_features`."""
    crop = jaw_aligned_crops(depth, grasps, cfg.crop_window_px, cfg.crop_size, cfg.crop_depth_scale)
    grasp = grasp_features(grasps, tuple(depth.shape[-2:]), floor_distance, wall_height)
    return {"crop": crop, "grasp": grasp}
