"""What the controller needs from a grasp-correcting policy and from its trainer (no RL imports here).

Any SAC implementation plugs in by providing these methods; :mod:`dexrl.app.sac_corrector` is a small one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from dexrl.grasp import CameraExtrinsics, CameraIntrinsics, GraspPoses, ImageGrasps

__all__ = ["GraspObservation", "GraspPolicy", "GraspTrainer", "PolicyLoader"]


@dataclass
class GraspObservation:
    """What a policy sees for one batch of N envs (CPU tensors).

    Attributes:
        depth: (N, H, W) depth images [m]; 0 marks missing pixels.
        mask: (N, H, W) bool bin-interior mask.
        proposed: the planner's best image grasp per env, fields of shape (N,).
        proposed_poses: the same grasps in the world frame, fields of shape (N,).
        intrinsics: the depth camera.
        extrinsics: one camera pose per env.
    """

    depth: torch.Tensor
    mask: torch.Tensor
    proposed: ImageGrasps
    proposed_poses: GraspPoses
    intrinsics: CameraIntrinsics
    extrinsics: CameraExtrinsics


@runtime_checkable
class GraspPolicy(Protocol):
    """Turns the planner's proposals into corrected world grasp poses."""

    def correct(self, obs: GraspObservation) -> GraspPoses:
        """Deterministic corrected poses, fields of shape (N,), world frame."""
        ...


@runtime_checkable
class GraspTrainer(GraspPolicy, Protocol):
    """A policy that learns from the attempts the controller executes.

    The controller calls ``explore`` then executes the returned poses, then ``learn`` with their rewards;
    ``learn`` stores the transitions and runs the gradient updates that are due.
    """

    @property
    def updates(self) -> int:
        """Gradient updates run so far."""
        ...

    def explore(self, obs: GraspObservation) -> GraspPoses:
        """Stochastic corrected poses for training, fields of shape (N,)."""
        ...

    def learn(self, reward: torch.Tensor) -> None:
        """Learn from the rewards (N,) of the poses last returned by ``explore``."""
        ...

    def save(self, path: Path) -> Path:
        """Write a checkpoint; returns the file written."""
        ...

    def load(self, path: Path) -> None:
        """Replace the weights with a checkpoint's."""
        ...


PolicyLoader = Callable[[Path], GraspPolicy]
"""Builds a policy from a checkpoint file (the session's hook for loading policies it did not train)."""
