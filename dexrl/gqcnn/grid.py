"""Where FC-GQ-CNN outputs sit in the image: output size, cell <-> pixel, angle bin <-> angle, grid mask.

The network has a total stride of 4 and a 96x96 receptive field, so output cell (h, w) scores grasps centred
on pixel (u, v) = (4 w + 48, 4 h + 48) (the centre of the 96x96 crop that starts at (4 w, 4 h)). Angle bin b
of ``bins`` scores jaw axes at angle theta_b = pi/2 - (b + 1/2) pi / bins in the image (axis (cos, sin) in (u,
v), i.e. measured from the image x axis towards y, down), the convention of :class:`dexrl.grasp.ImageGrasps`.
"""

from __future__ import annotations

import math

import torch

from dexrl.grasp import wrap_half_turn

__all__ = [
    "CROP_SIZE",
    "STRIDE",
    "angle_to_bin",
    "bin_to_angle",
    "cell_centers",
    "cell_of_pixel",
    "grid_mask",
    "output_size",
]

CROP_SIZE = 96
"""Side of the square depth crop the network sees per output cell [px] (its receptive field)."""
STRIDE = 4
"""Pixels between neighbouring output cells (two 2x2 max-pools)."""
_HALF = CROP_SIZE // 2


def output_size(height: int, width: int) -> tuple[int, int]:
    """Output grid (h, w) of the FC network on an H x W image: pool1 = ceil((H - 12) / 2),
    pool2 = ceil((pool1 - 8) / 2), out = pool2 - 16; e.g. (74, 106) for 386 x 516. Zero or less: too small."""

    def side(n: int) -> int:
        pool1 = -(-(n - 12) // 2)
        pool2 = -(-(pool1 - 8) // 2)
        return pool2 - 16

    return side(height), side(width)


def cell_centers(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Grasp centre pixels (..., 2) as (u, v) of output cells given by row and column indices (broadcast)."""
    rows, cols = torch.broadcast_tensors(rows, cols)
    return torch.stack((cols * STRIDE + _HALF, rows * STRIDE + _HALF), dim=-1).to(torch.float32)


def cell_of_pixel(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output cell (row, column) whose grasp centre is nearest to pixel (u, v); may lie off the grid."""
    return torch.round((v - _HALF) / STRIDE).long(), torch.round((u - _HALF) / STRIDE).long()


def bin_to_angle(bins: torch.Tensor | int, num_bins: int) -> torch.Tensor:
    """Jaw axis angle [rad] at the centre of angle bin(s) ``bins`` out of ``num_bins``; in (-pi/2, pi/2)."""
    bins = torch.as_tensor(bins, dtype=torch.float32)
    return math.pi / 2 - (bins + 0.5) * math.pi / num_bins


def angle_to_bin(angle: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Angle bin (long) of jaw axis angles [rad] (any range; a jaw axis is symmetric under a half turn).

    The inverse of :func:`bin_to_angle`: wrap to [-pi/2, pi/2), negate, add pi/2, divide by the bin width.
    """
    flipped = math.pi / 2 - wrap_half_turn(torch.as_tensor(angle, dtype=torch.float64))  # (0, pi]
    return torch.clamp(torch.floor(flipped / (math.pi / num_bins)).long(), 0, num_bins - 1)


def grid_mask(mask: torch.Tensor) -> torch.Tensor:
    """Admissible output cells (B, h, w) of pixel masks (B, H, W): the mask at each cell's centre pixel, and
    only cells whose 96 x 96 crop lies inside the image (centre in [48, H - 48) x [48, W - 48))."""
    height, width = mask.shape[-2:]
    rows, cols = output_size(height, width)
    sampled = mask[..., _HALF : height - _HALF : STRIDE, _HALF : width - _HALF : STRIDE][..., :rows, :cols]
    out = torch.zeros(*mask.shape[:-2], rows, cols, dtype=torch.bool, device=mask.device)
    out[..., : sampled.shape[-2], : sampled.shape[-1]] = sampled
    return out
