"""Pinhole camera model: intrinsics, extrinsics and pixel <-> 3D conversions.

Frames: the camera frame follows OpenCV (x right, y down, z forward along the optical axis); the world frame
has Z up. Every function works on batches: leading dimensions are broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CameraIntrinsics",
    "CameraExtrinsics",
    "PHOXI_S",
    "camera_parameters",
    "deproject_per_camera",
    "look_at_rotation",
]


@dataclass
class CameraIntrinsics:
    """Pinhole intrinsics of an undistorted camera.

    Attributes:
        fx, fy: focal lengths [px].
        cx, cy: principal point [px], measured from the centre of the top-left pixel.
        width, height: image size [px].
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def matrix(self) -> torch.Tensor:
        """The 3x3 intrinsic matrix K (float64)."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=torch.float64
        )

    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Project camera-frame points (..., 3) [m] to pixels (..., 2) as (u, v) = (column, row)."""
        z = points_cam[..., 2]
        u = self.fx * points_cam[..., 0] / z + self.cx
        v = self.fy * points_cam[..., 1] / z + self.cy
        return torch.stack((u, v), dim=-1)

    def deproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Lift pixels (..., 2) with depth along the optical axis (...) [m] to camera-frame points (..., 3)."""
        x = (pixels[..., 0] - self.cx) * depth / self.fx
        y = (pixels[..., 1] - self.cy) * depth / self.fy
        return torch.stack((x, y, depth), dim=-1)

    def deproject_image(self, depth: torch.Tensor) -> torch.Tensor:
        """Point cloud of depth images (..., H, W) [m] as camera-frame points (..., H, W, 3)."""
        if depth.shape[-2:] != (self.height, self.width):
            raise ValueError(
                f"depth image is {tuple(depth.shape[-2:])}, the camera is {self.height}x{self.width}"
            )
        rows = torch.arange(self.height, device=depth.device, dtype=depth.dtype)
        cols = torch.arange(self.width, device=depth.device, dtype=depth.dtype)
        v, u = torch.meshgrid(rows, cols, indexing="ij")
        pixels = torch.stack((u, v), dim=-1).expand(*depth.shape, 2)
        return self.deproject(pixels, depth)

    def scaled(self, factor: float) -> "CameraIntrinsics":
        """Intrinsics of the same camera with the image resized by ``factor``."""
        return CameraIntrinsics(
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=(self.cx + 0.5) * factor - 0.5,
            cy=(self.cy + 0.5) * factor - 0.5,
            width=round(self.width * factor),
            height=round(self.height * factor),
        )

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("fx", "fy", "cx", "cy", "width", "height")}

    @classmethod
    def from_dict(cls, data: dict) -> "CameraIntrinsics":
        return cls(**{k: data[k] for k in ("fx", "fy", "cx", "cy", "width", "height")})


def camera_parameters(cameras: Sequence[CameraIntrinsics], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 4) float32 ``fx, fy, cx, cy`` [px] of one camera per image."""
    return torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cameras], dtype=torch.float32, device=device)


def deproject_per_camera(
    cameras: Sequence[CameraIntrinsics] | torch.Tensor, pixels: torch.Tensor, depth: torch.Tensor
) -> torch.Tensor:
    """Deproject pixels (B, ..., 2) with depths (B, ...) [m], one camera per leading index, to (B, ..., 3).
    ``cameras``: the cameras, or their (B, 4) :func:`camera_parameters` already on the pixels' device (which
    keeps the call free of host-to-device copies, e.g. inside a CUDA graph)."""
    if not isinstance(cameras, torch.Tensor):
        cameras = camera_parameters(cameras, pixels.device)
    params = cameras.to(pixels.dtype).view(len(cameras), *([1] * (depth.dim() - 1)), 4)
    x = (pixels[..., 0] - params[..., 2]) * depth / params[..., 0]
    y = (pixels[..., 1] - params[..., 3]) * depth / params[..., 1]
    return torch.stack((x, y, depth), dim=-1)


PHOXI_S = CameraIntrinsics(fx=552.5, fy=552.5, cx=255.5, cy=191.75, width=516, height=386)
"""Photoneo PhoXi S calibration used by Dex-Net 4.0 and the released FC-GQ-CNN model."""


@dataclass
class CameraExtrinsics:
    """Camera poses in the world: ``p_world = rotation @ p_cam + position``.

    Attributes:
        position: camera optical centres in the world, shape (N, 3) [m].
        rotation: camera-to-world rotation matrices (OpenCV camera axes), shape (N, 3, 3).
    """

    position: torch.Tensor
    rotation: torch.Tensor

    def __getitem__(self, index: torch.Tensor | slice) -> CameraExtrinsics:
        """The cameras selected by ``index`` (e.g. a tensor of env ids), in that order."""
        return CameraExtrinsics(self.position[index], self.rotation[index])

    def camera_to_world(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Transform points (N, ..., 3) from each camera's frame to the world."""
        extra = points_cam.dim() - 2
        rot = self.rotation.view(-1, *([1] * extra), 3, 3)
        pos = self.position.view(-1, *([1] * extra), 3)
        return (rot @ points_cam.unsqueeze(-1)).squeeze(-1) + pos

    def world_to_camera(self, points_world: torch.Tensor) -> torch.Tensor:
        """Transform points (N, ..., 3) from the world to each camera's frame."""
        extra = points_world.dim() - 2
        rot_t = self.rotation.transpose(-1, -2).view(-1, *([1] * extra), 3, 3)
        pos = self.position.view(-1, *([1] * extra), 3)
        return (rot_t @ (points_world - pos).unsqueeze(-1)).squeeze(-1)


def look_at_rotation(eyes: torch.Tensor, targets: torch.Tensor, up: tuple[float, float, float] = (0.0, 1.0, 0.0)):
    """Camera-to-world rotations (N, 3, 3) of OpenCV cameras at ``eyes`` looking at ``targets`` (N, 3).

    ``up`` is the world direction that should point *up* in the image (towards row 0), so image rows run
    along ``-up``. It must not be parallel to the viewing direction.
    """
    z_axis = torch.nn.functional.normalize(targets - eyes, dim=-1)
    up_vec = torch.tensor(up, dtype=eyes.dtype, device=eyes.device).expand_as(z_axis)
    x_axis = torch.nn.functional.normalize(torch.cross(-up_vec, z_axis, dim=-1), dim=-1)
    y_axis = torch.cross(z_axis, x_axis, dim=-1)
    return torch.stack((x_axis, y_axis, z_axis), dim=-1)
