"""A baseline planner for demos and tests before FC-GQ-CNN: grasp the highest object across its minor axis.

From the depth image alone: the highest point inside the mask, the pixels within a small height band of it and
within one object's reach, their centroid (grasp centre) and principal axes (the jaw closes along the minor
axis). An object wider than the jaws across its minor axis is skipped for the next highest one. Batched over images; no learning, no quality estimate (q is the fraction of the blob's spread that lies
along its major axis, a rough elongation score).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .camera import CameraIntrinsics, deproject_per_camera
from .planner import NoValidGrasps, PlannerInputError, PlanResult
from .types import ImageGrasps, wrap_half_turn

__all__ = ["HighestObjectPlanner", "validate_planner_input", "validate_planner_request"]


def validate_planner_input(depth: torch.Tensor, intrinsics, mask: torch.Tensor | None) -> list[CameraIntrinsics]:
    """Check a planning request; returns one intrinsics per image. Raises :class:`PlannerInputError`."""
    cameras = validate_planner_request(depth, intrinsics, mask)
    if not torch.isfinite(depth).all():
        raise PlannerInputError("depth contains NaN or inf (mark missing pixels with 0)")
    if not (depth > 0).flatten(1).any(dim=1).all():
        raise PlannerInputError("an image has no valid depth (all zero)")
    return cameras


def validate_planner_request(depth: torch.Tensor, intrinsics, mask: torch.Tensor | None) -> list[CameraIntrinsics]:
    """The checks of :func:`validate_planner_input` that need no look at the depth values (types, shapes,
    cameras), so none waits for a device; returns one intrinsics per image."""
    if not isinstance(depth, torch.Tensor) or depth.dim() != 3:
        raise PlannerInputError(f"depth must be a (B, H, W) tensor, got {getattr(depth, 'shape', type(depth))}")
    if not depth.is_floating_point():
        raise PlannerInputError(f"depth must be floating point metres, got {depth.dtype}")
    if depth.shape[0] == 0:
        raise PlannerInputError("depth holds no images")
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
        depth_offset: the grasp centre lies this far below the top surface [m] ...
        tip_clearance: ... but at least this far above the bin floor (the deepest depth in the mask) [m]; it
            should slightly exceed the gripper's TCP height above its fingertips.
        width: the jaw opening to report [m].
        min_pixels: fewer blob pixels than this means no graspable object.
        max_candidates: objects tried per image, highest first, until one fits between the jaws.
    """

    def __init__(
        self,
        band: float = 0.01,
        reach: float = 0.06,
        depth_offset: float = 0.035,
        tip_clearance: float = 0.013,
        width: float = 0.05,
        min_pixels: int = 12,
        max_candidates: int = 4,
    ):
        self.band, self.reach, self.depth_offset, self.width = band, reach, depth_offset, width
        self.tip_clearance = tip_clearance
        self.min_pixels, self.max_candidates = min_pixels, max_candidates

    def _top_blob(self, depth: torch.Tensor, valid: torch.Tensor, cameras: list[CameraIntrinsics]) -> dict:
        """The top object of each image: its pixels, centroid, minor axis and whether it fits the jaws."""
        b, h, w = depth.shape
        masked = torch.where(valid, depth, torch.full_like(depth, torch.inf))
        top_index = masked.flatten(1).argmin(dim=1)
        top_depth = masked.flatten(1).gather(1, top_index.unsqueeze(1)).squeeze(1).clamp(max=1e3)
        top_v, top_u = top_index // w, top_index % w
        rows = torch.arange(h, device=depth.device, dtype=depth.dtype).view(1, h, 1)
        cols = torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, 1, w)
        fx = torch.tensor([c.fx for c in cameras], device=depth.device, dtype=depth.dtype)
        reach_px = (self.reach * fx / top_depth).view(b, 1, 1)
        band = valid & (depth <= top_depth.view(b, 1, 1) + self.band)
        centre_u, centre_v = top_u.to(depth.dtype), top_v.to(depth.dtype)
        for _ in range(4):  # grow from the highest pixel, then again from each centroid (flat tops)
            near = (rows - centre_v.view(b, 1, 1)) ** 2 + (cols - centre_u.view(b, 1, 1)) ** 2 <= reach_px**2
            blob = band & near
            count = blob.flatten(1).sum(dim=1).to(depth.dtype).clamp(min=1)
            weight = blob.to(depth.dtype)
            centre_u = (weight * cols).flatten(1).sum(1) / count
            centre_v = (weight * rows).flatten(1).sum(1) / count
        mean_u, mean_v = centre_u, centre_v
        # What a skipped object leaves behind must not come back as a sliver: drop its whole neighbourhood.
        around = (rows - mean_v.view(b, 1, 1)) ** 2 + (cols - mean_u.view(b, 1, 1)) ** 2 <= (1.5 * reach_px) ** 2
        du, dv = cols - mean_u.view(b, 1, 1), rows - mean_v.view(b, 1, 1)
        cov = torch.stack(
            [(weight * du * du).flatten(1).sum(1), (weight * du * dv).flatten(1).sum(1), (weight * dv * dv).flatten(1).sum(1)], 1
        ) / count.unsqueeze(1)
        matrix = torch.stack((cov[:, 0], cov[:, 1], cov[:, 1], cov[:, 2]), dim=1).view(b, 2, 2)
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix)  # ascending: column 0 is the minor axis
        minor = eigenvectors[:, :, 0]
        # Width across the minor axis: a uniform strip of width L has variance L^2 / 12.
        width_m = torch.sqrt(12 * eigenvalues[:, 0].clamp(min=0)) * top_depth / fx
        return {
            "blob": band & around,
            "fits": (width_m <= self.width - 0.008) & (count >= self.min_pixels),
            "top_depth": top_depth,
            "mean_u": mean_u,
            "mean_v": mean_v,
            "angle": wrap_half_turn(torch.atan2(minor[:, 1], minor[:, 0])),
            "elongation": 1 - eigenvalues[:, 0] / eigenvalues[:, 1].clamp(min=1e-9),
        }

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
        b = depth.shape[0]
        in_mask = depth > 0 if mask is None else mask & (depth > 0)
        valid = in_mask  # shrinks as objects too wide for the jaws are skipped
        if not valid.flatten(1).any(dim=1).all():
            raise NoValidGrasps("the mask leaves no valid depth pixel in an image")
        chosen = None
        for _ in range(self.max_candidates):  # a few objects, top down; not a loop over images
            candidate = self._top_blob(depth, valid, cameras)
            if chosen is None:
                chosen = candidate
            else:  # keep earlier picks that fit; take the new one where none fitted so far
                take = ~chosen["fits"] & candidate["fits"]
                chosen = {key: torch.where(take.view(-1, *([1] * (value.dim() - 1))), candidate[key], value)
                          for key, value in chosen.items()}
            if bool(chosen["fits"].all()):
                break
            valid = valid & ~candidate["blob"]
            if not valid.flatten(1).any(dim=1).all():
                break
        top_depth, mean_u, mean_v, angle, elongation = (
            chosen[key] for key in ("top_depth", "mean_u", "mean_v", "angle", "elongation")
        )
        # Deep enough to hold the object near its middle, but with the fingertips no lower than the floor.
        floor_depth = torch.where(in_mask, depth, torch.zeros_like(depth)).flatten(1).amax(dim=1)
        grasp_depth = torch.minimum(top_depth + self.depth_offset, floor_depth - self.tip_clearance)
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
