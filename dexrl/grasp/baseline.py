"""A baseline planner for demos and tests before FC-GQ-CNN: grasp the highest object across its minor axis.

From the depth image alone: the highest point inside the mask, the pixels within a small height band of it and
within one object's reach, their centroid (grasp centre) and principal axes (the jaw closes along the minor
axis). Batched over images; no learning, no quality estimate (q is the fraction of the blob's spread that lies
along its major axis, a rough elongation score).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .camera import CameraIntrinsics, deproject_per_camera
from .planner import NoValidGrasps, PlannerInputError, PlanResult
from .types import ImageGrasps, wrap_half_turn

__all__ = ["HighestObjectPlanner", "validate_planner_input"]


def validate_planner_input(depth: torch.Tensor, intrinsics, mask: torch.Tensor | None) -> list[CameraIntrinsics]:
    """Check a planning request; returns one intrinsics per image. Raises :class:`PlannerInputError`."""
    if not isinstance(depth, torch.Tensor) or depth.dim() != 3:
        raise PlannerInputError(f"depth must be a (B, H, W) tensor, got {getattr(depth, 'shape', type(depth))}")
    if not depth.is_floating_point():
        raise PlannerInputError(f"depth must be floating point metres, got {depth.dtype}")
    if depth.shape[0] == 0:
        raise PlannerInputError("depth holds no images")
    if not torch.isfinite(depth).all():
        raise PlannerInputError("depth contains NaN or inf (mark missing pixels with 0)")
    if not (depth > 0).flatten(1).any(dim=1).all():
        raise PlannerInputError("an image has no valid depth (all zero)")
    if mask is not None and (mask.shape != depth.shape or mask.dtype != torch.bool):
        raise PlannerInputError(f"mask must be a bool tensor of shape {tuple(depth.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    cameras = [intrinsics] * depth.shape[0] if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
    if len(cameras) != depth.shape[0]:
        raise PlannerInputError(f"{len(cameras)} intrinsics for {depth.shape[0]} images")
    for camera in cameras:
        if (camera.height, camera.width) != tuple(depth.shape[1:]):
            raise PlannerInputError(f"intrinsics are for {camera.height}x{camera.width}, images are {tuple(depth.shape[1:])}")
    return cameras


class HighestObjectPlanner:
    """Grasp the highest object across its minor axis (implements :class:`dexrl.grasp.Planner`).

    Args:
        band: height band below the highest point that belongs to the top object [m].
        reach: radius around the highest point that one object can span [m].
        depth_offset: the grasp centre lies this far below the top surface [m].
        width: the jaw opening to report [m].
        min_pixels: fewer blob pixels than this means no graspable object.
    """

    def __init__(self, band: float = 0.01, reach: float = 0.06, depth_offset: float = 0.012, width: float = 0.05, min_pixels: int = 12):
        self.band, self.reach, self.depth_offset, self.width, self.min_pixels = band, reach, depth_offset, width, min_pixels

    def plan(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None = None,
        k: int = 1,
        return_q_map: bool = False,
    ) -> PlanResult:
        start = time.perf_counter()
        cameras = validate_planner_input(depth, intrinsics, mask)
        b, h, w = depth.shape
        valid = depth > 0 if mask is None else mask & (depth > 0)
        if not valid.flatten(1).any(dim=1).all():
            raise NoValidGrasps("the mask leaves no valid depth pixel in an image")
        masked = torch.where(valid, depth, torch.full_like(depth, torch.inf))
        top_index = masked.flatten(1).argmin(dim=1)
        top_depth = masked.flatten(1).gather(1, top_index.unsqueeze(1)).squeeze(1)
        top_v, top_u = top_index // w, top_index % w
        rows = torch.arange(h, device=depth.device, dtype=depth.dtype).view(1, h, 1)
        cols = torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, 1, w)
        fx = torch.tensor([c.fx for c in cameras], device=depth.device, dtype=depth.dtype)
        reach_px = (self.reach * fx / top_depth).view(b, 1, 1)
        near = (rows - top_v.view(b, 1, 1)) ** 2 + (cols - top_u.view(b, 1, 1)) ** 2 <= reach_px**2
        blob = valid & near & (depth <= top_depth.view(b, 1, 1) + self.band)
        count = blob.flatten(1).sum(dim=1).to(depth.dtype)
        if (count < self.min_pixels).any():
            raise NoValidGrasps(f"no object of at least {self.min_pixels} pixels at the top of an image")
        weight = blob.to(depth.dtype)
        mean_u = (weight * cols).flatten(1).sum(1) / count
        mean_v = (weight * rows).flatten(1).sum(1) / count
        du, dv = cols - mean_u.view(b, 1, 1), rows - mean_v.view(b, 1, 1)
        cov = torch.stack(
            [(weight * du * du).flatten(1).sum(1), (weight * du * dv).flatten(1).sum(1), (weight * dv * dv).flatten(1).sum(1)], 1
        ) / count.unsqueeze(1)
        matrix = torch.stack((cov[:, 0], cov[:, 1], cov[:, 1], cov[:, 2]), dim=1).view(b, 2, 2)
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix)  # ascending: column 0 is the minor axis
        minor = eigenvectors[:, :, 0]
        angle = wrap_half_turn(torch.atan2(minor[:, 1], minor[:, 0]))
        elongation = 1 - eigenvalues[:, 0] / eigenvalues[:, 1].clamp(min=1e-9)
        grasp_depth = top_depth + self.depth_offset
        center = torch.stack((mean_u, mean_v), dim=-1)
        positions = deproject_per_camera(cameras, center, grasp_depth)
        grasps = ImageGrasps(
            center=torch.zeros(b, k, 2, dtype=depth.dtype, device=depth.device),
            angle=torch.zeros(b, k, dtype=depth.dtype, device=depth.device),
            depth=torch.zeros(b, k, dtype=depth.dtype, device=depth.device),
            width=torch.zeros(b, k, dtype=depth.dtype, device=depth.device),
            q=torch.zeros(b, k, dtype=depth.dtype, device=depth.device),
        )
        grasps.center[:, 0], grasps.angle[:, 0], grasps.depth[:, 0] = center, angle, grasp_depth
        grasps.width[:, 0], grasps.q[:, 0] = self.width, elongation.clamp(0, 1)
        valid_k = torch.zeros(b, k, dtype=torch.bool, device=depth.device)
        valid_k[:, 0] = True
        positions_k = torch.zeros(b, k, 3, dtype=depth.dtype, device=depth.device)
        positions_k[:, 0] = positions
        return PlanResult(grasps, valid_k, positions_k, None, {"total": time.perf_counter() - start})
