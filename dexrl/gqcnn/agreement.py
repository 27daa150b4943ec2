"""How closely one FC-GQ-CNN planner (e.g. the fast path) follows another (the float32 reference) on images.

For each image: is the top grasp the same (cell, angle bin, depth bin); how far the returned grasps' q lie
from the reference network's q of the same grasps; the regret (the reference's best q minus the reference's q
of the grasp chosen); and where the reference's best (depth bin, cell) pair ranks in the planner's own map
before any rescoring (rescoring the top N pairs is exact for the top grasp when that rank is below N).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dexrl.grasp import CameraIntrinsics

from .grid import angle_to_bin, cell_of_pixel
from .policy import FCGQCNNPlanner

__all__ = ["Agreement", "agreement"]


@dataclass
class Agreement:
    """Per-image agreement of a planner with a reference planner (tensors of shape (N,) over N images).

    Attributes:
        same_top: the top grasp's cell, angle bin and depth bin equal the reference's.
        max_abs_dq: largest |q - reference q| over the planner's returned grasps [probability].
        regret: reference best q minus the reference's q of the planner's top grasp (0 when the same).
        rank_of_reference_top: rank (0 = best) of the reference's best (depth bin, cell) pair in the planner's
            q-map before rescoring, by each pair's best grasp that passes the policy's filters.
    """

    same_top: torch.Tensor
    max_abs_dq: torch.Tensor
    regret: torch.Tensor
    rank_of_reference_top: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Share of images with the same top grasp, and worst cases over images."""
        return {
            "top1_same": self.same_top.double().mean().item(),
            "max_abs_dq": self.max_abs_dq.max().item(),
            "max_regret": self.regret.max().item(),
            "max_rank_of_reference_top": int(self.rank_of_reference_top.max().item()),
        }


def agreement(
    planner: FCGQCNNPlanner,
    reference: FCGQCNNPlanner,
    depth: torch.Tensor,
    mask: torch.Tensor,
    intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
    *,
    k: int = 1,
    batch: int = 16,
) -> Agreement:
    """Compare ``planner`` with ``reference`` on depth images (N, H, W) [m] and masks (N, H, W) bool.

    Both must use the same depth bins, angle bins and filters. ``batch`` images are planned per call.
    """
    cameras = [intrinsics] * len(depth) if isinstance(intrinsics, CameraIntrinsics) else list(intrinsics)
    parts = [
        _agreement_of_batch(
            planner, reference, depth[i : i + batch], mask[i : i + batch], cameras[i : i + batch], k
        )
        for i in range(0, len(depth), batch)
    ]
    return Agreement(*(torch.cat(values) for values in zip(*parts, strict=True)))


@torch.inference_mode()
def _agreement_of_batch(planner, reference, depth, mask, cameras, k: int) -> tuple[torch.Tensor, ...]:
    expected = reference.plan(depth, cameras, mask, k=1)
    reference_quality = reference.evaluate(depth, cameras, mask)
    result = planner.plan(depth, cameras, mask, k=k)
    own_quality = planner.evaluate(depth, cameras, mask)
    grasps = result.grasps
    bins = reference_quality.q.shape[2]
    depth_bin = (grasps.depth[..., None] - reference_quality.grasp_depth[:, None]).abs().argmin(dim=2)
    row, col = cell_of_pixel(grasps.center[..., 0], grasps.center[..., 1])
    angle_bin = angle_to_bin(grasps.angle, bins).to(row.device)
    image = torch.arange(len(depth), device=row.device)[:, None].expand_as(row)
    reference_q = reference_quality.q[image, depth_bin, angle_bin, row, col]  # (B, k)
    dq = torch.where(result.valid, (grasps.q - reference_q).abs(), 0.0).amax(dim=1)
    same_top = (
        (grasps.center[:, 0] == expected.grasps.center[:, 0]).all(dim=1)
        & (grasps.angle[:, 0] == expected.grasps.angle[:, 0])
        & (grasps.depth[:, 0] == expected.grasps.depth[:, 0])
    )
    regret = expected.grasps.q[:, 0] - reference_q[:, 0]
    # the reference top pair's rank in the planner's own map (by each pair's best grasp that passes)
    pair_q = torch.where(planner.passing(own_quality), own_quality.q, -1.0).amax(dim=2).flatten(1)
    top_bin = (expected.grasps.depth[:, :1] - reference_quality.grasp_depth).abs().argmin(dim=1)
    top_row, top_col = cell_of_pixel(expected.grasps.center[:, 0, 0], expected.grasps.center[:, 0, 1])
    rows, cols = own_quality.q.shape[-2:]
    flat = (top_bin * rows + top_row) * cols + top_col
    rank = (pair_q > pair_q.gather(1, flat[:, None])).sum(dim=1)
    return same_top.cpu(), dq.cpu(), regret.cpu(), rank.cpu()
