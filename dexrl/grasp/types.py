"""Batched parallel-jaw grasps: in the image (2D, as the planner proposes them) and in the world (3D).

A parallel-jaw grasp is symmetric under a half turn, so angles are wrapped to [-pi/2, pi/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .camera import CameraExtrinsics, CameraIntrinsics

__all__ = ["ImageGrasps", "GraspPoses", "wrap_half_turn", "image_to_world", "world_to_image"]


def wrap_half_turn(angle: torch.Tensor) -> torch.Tensor:
    """Wrap angles [rad] to [-pi/2, pi/2), the range of a symmetric jaw axis."""
    return torch.remainder(angle + math.pi / 2, math.pi) - math.pi / 2


class _Batch:
    """Shared helpers of the batched grasp containers (all fields are tensors with a leading batch dim)."""

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]

    def __getitem__(self, index):
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str):
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def to_records(self) -> list[dict]:
        """One JSON-ready dict per grasp."""
        columns = {f.name: getattr(self, f.name).detach().cpu().tolist() for f in fields(self)}
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


@dataclass
class ImageGrasps(_Batch):
    """B grasps in image coordinates (the planner's output).

    Attributes:
        center: grasp centre pixels (B, 2) as (u, v) = (column, row) [px].
        angle: jaw axis angle in the image (B,) [rad]; the axis is (cos, sin) in (u, v), i.e. measured
            from the image x axis towards the image y axis (down). Wrapped to [-pi/2, pi/2).
        depth: distance of the grasp centre from the camera along the optical axis (B,) [m].
        width: jaw opening (B,) [m].
        q: predicted grasp quality in [0, 1] (B,).
    """

    center: torch.Tensor
    angle: torch.Tensor
    depth: torch.Tensor
    width: torch.Tensor
    q: torch.Tensor


@dataclass
class GraspPoses(_Batch):
    """B top-down grasp poses in the world frame (Z up).

    Attributes:
        position: grasp centre, midway between the finger pads (B, 3) [m].
        yaw: world yaw of the jaw (closing) axis, wrapped to [-pi/2, pi/2) (B,) [rad].
        width: jaw opening (B,) [m].
    """

    position: torch.Tensor
    yaw: torch.Tensor
    width: torch.Tensor


def image_to_world(
    grasps: ImageGrasps, intrinsics: CameraIntrinsics, extrinsics: CameraExtrinsics
) -> GraspPoses:
    """Deproject image grasps to world grasp poses, one camera pose per grasp.

    The jaw axis is mapped through the camera rotation and projected onto the world XY plane, which is
    exact for a camera looking straight down and the 4-DoF top-down grasp for any other camera.
    """
    center_cam = intrinsics.deproject(grasps.center, grasps.depth)
    position = extrinsics.camera_to_world(center_cam)
    axis_cam = torch.stack((torch.cos(grasps.angle), torch.sin(grasps.angle), torch.zeros_like(grasps.angle)), -1)
    axis_world = (extrinsics.rotation @ axis_cam.unsqueeze(-1)).squeeze(-1)
    yaw = wrap_half_turn(torch.atan2(axis_world[:, 1], axis_world[:, 0]))
    return GraspPoses(position=position, yaw=yaw, width=grasps.width)


def world_to_image(
    poses: GraspPoses, intrinsics: CameraIntrinsics, extrinsics: CameraExtrinsics, q: torch.Tensor | None = None
) -> ImageGrasps:
    """Project world grasp poses into each camera (the inverse of :func:`image_to_world`)."""
    center_cam = extrinsics.world_to_camera(poses.position)
    axis_world = torch.stack((torch.cos(poses.yaw), torch.sin(poses.yaw), torch.zeros_like(poses.yaw)), -1)
    axis_cam = (extrinsics.rotation.transpose(-1, -2) @ axis_world.unsqueeze(-1)).squeeze(-1)
    angle = wrap_half_turn(torch.atan2(axis_cam[:, 1], axis_cam[:, 0]))
    return ImageGrasps(
        center=intrinsics.project(center_cam),
        angle=angle,
        depth=center_cam[:, 2],
        width=poses.width,
        q=torch.zeros_like(poses.yaw) if q is None else q,
    )
