"""The planner interface shared by every grasp planner (baseline, FC-GQ-CNN in process, the websocket bridge).

The simulator, the RL task and the front-ends only talk to :class:`Planner`, so they do not care whether the
network runs in this process, on a GPU in another process, or on another machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .camera import CameraIntrinsics
from .types import ImageGrasps

__all__ = ["Planner", "PlanResult", "PlannerError", "PlannerInputError", "NoValidGrasps", "PlannerUnavailable"]


class PlannerError(RuntimeError):
    """Base class of the planner's typed errors."""

    code = "planner_error"


class PlannerInputError(PlannerError, ValueError):
    """The request itself is wrong: shape, dtype, NaN/inf, all-zero depth, mismatched mask or intrinsics."""

    code = "bad_input"


class NoValidGrasps(PlannerError):
    """The input is well formed but no grasp passes the mask and filters (e.g. an empty mask)."""

    code = "no_valid_grasps"


class PlannerUnavailable(PlannerError):
    """A remote planner cannot be reached (connection refused, closed, or timed out); the call may be retried."""

    code = "unavailable"


@dataclass
class PlanResult:
    """Top-k grasps for each of B images.

    Attributes:
        grasps: image grasps with fields of shape (B, k) (``center`` is (B, k, 2)), sorted by q, descending.
        valid: (B, k) bool; False where an image has fewer than k grasps (those rows hold zeros).
        positions_cam: grasp centres in each camera's frame (B, k, 3) [m].
        q_map: optional per-angle quality maps (B, A, h, w) in [0, 1] for display, on the planner's output grid.
        timings: wall-clock seconds per stage (e.g. ``{"preprocess": ..., "network": ..., "select": ...}``).
        q_map_grid: (stride, offset) [px] of ``q_map``'s cells: cell (i, j) is centred on image pixel
            (offset + stride j, offset + stride i).
    """

    grasps: ImageGrasps
    valid: torch.Tensor
    positions_cam: torch.Tensor
    q_map: torch.Tensor | None = None
    timings: dict[str, float] | None = None
    q_map_grid: tuple[float, float] = (1.0, 0.0)

    @property
    def best(self) -> ImageGrasps:
        """The top grasp of each image, fields of shape (B,)."""
        return ImageGrasps(**{name: value[:, 0] for name, value in vars(self.grasps).items()})


@runtime_checkable
class Planner(Protocol):
    """Anything that turns depth images into ranked parallel-jaw grasps."""

    def plan(
        self,
        depth: torch.Tensor,
        intrinsics: CameraIntrinsics | Sequence[CameraIntrinsics],
        mask: torch.Tensor | None = None,
        k: int = 1,
        return_q_map: bool = False,
    ) -> PlanResult:
        """Plan grasps for a batch of depth images.

        Args:
            depth: (B, H, W) float32 depth along the optical axis [m]; 0 marks missing pixels.
            intrinsics: one camera for the whole batch, or one per image.
            mask: optional (B, H, W) bool; grasp centres must lie where it is True.
            k: number of grasps to return per image.
            return_q_map: also return the quality maps for display.

        Raises:
            PlannerInputError: malformed input. NoValidGrasps: an image has no admissible grasp.
            PlannerUnavailable: a remote planner cannot be reached.
        """
        ...
