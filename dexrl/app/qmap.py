"""The quality image a front-end shows for each env."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DEPTH_STAND_IN", "display_q_map"]

DEPTH_STAND_IN = "depth stand-in (this planner gives no q-map): height above the lowest bin pixel"


def display_q_map(
    q_map: torch.Tensor | None, depth: torch.Tensor, mask: torch.Tensor, grid: tuple[float, float] = (1.0, 0.0)
) -> tuple[np.ndarray, str, float, float]:
    """(N, h, w) float32 in [0, 1] per env, where it came from, and its grid's stride and offset [px] (cell
    (i, j) is centred on pixel (offset + stride j, offset + stride i)).

    Args:
        q_map: the planner's per-angle qualities (N, A, h, w), or None.
        grid: the planner q-map's (stride, offset) [px] (``PlanResult.q_map_grid``).
        depth: (N, H, W) depth images [m], for the stand-in.
        mask: (N, H, W) bool bin mask, for the stand-in.

    With a planner q-map: the best quality over angles. Without one: the height of each masked pixel above
    the deepest masked pixel of its image, scaled to [0, 1] per image (0 outside the mask) - a picture of
    the heap, not a quality.
    """
    if q_map is not None:
        return q_map.amax(dim=1).clamp(0, 1).float().cpu().numpy(), "planner", *grid
    depth, mask = depth.cpu(), mask.cpu()
    far = torch.where(mask, depth, torch.zeros_like(depth)).flatten(1).amax(1).view(-1, 1, 1)
    near = torch.where(mask, depth, torch.full_like(depth, torch.inf)).flatten(1).amin(1).view(-1, 1, 1)
    height = (far - depth) / (far - near).clamp_min(1e-6)
    return (
        torch.where(mask, height.clamp(0, 1), torch.zeros_like(height)).float().numpy(),
        DEPTH_STAND_IN,
        1,
        0,
    )
