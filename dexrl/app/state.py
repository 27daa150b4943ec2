"""Immutable snapshots of a session, published by the worker thread and read by front-ends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PlannerStatus", "SceneGeometry", "SessionState"]


class PlannerStatus(enum.StrEnum):
    """What the planner last did."""

    STARTING = "starting"
    READY = "ready"
    UNAVAILABLE = "unavailable"  # a remote planner cannot be reached; the next plan retries
    NO_GRASPS = "no valid grasps"  # some bin shows nothing graspable: spawn a new bin
    ERROR = "error"


@dataclass(frozen=True)
class SceneGeometry:
    """The static scene, for drawing.

    Attributes:
        env_origins: (N, 3) world origin of each env [m].
        interior_size: bin inside length (x) and width (y) [m].
        floor_z: env-local height of the bin floor's top [m].
        wall_height: wall height above the floor [m].
        wall_thickness: [m].
        camera_positions: (N, 3) world position of each depth camera [m].
        pool_size: objects per env pool (the largest object count).
    """

    env_origins: np.ndarray
    interior_size: tuple[float, float]
    floor_z: float
    wall_height: float
    wall_thickness: float
    camera_positions: np.ndarray
    pool_size: int


@dataclass(frozen=True)
class SessionState:
    """Everything a front-end shows; arrays are per env (leading dim N), world frame, SI units.

    Attributes:
        version: grows with every published change.
        geometry: the static scene (None until the simulator is built).
        depth: (N, H, W) float32 depth images [m] of the current heaps.
        points: (N, M, 3) float32 world points of the bin contents, subsampled from ``depth``.
        q_map: (N, h, w) float32 in [0, 1], the best quality over angles per pixel, or a stand-in.
        q_map_source: "planner", or why a stand-in is shown.
        q_map_grid: (stride, offset) [px] of the q-map cells in the depth image.
        proposed: per env the top-k planned grasps, best first, as dicts: world ``position`` (3,) [m], ``yaw``
            [rad], ``width`` [m], ``q``; image ``center`` (u, v) [px], ``angle`` [rad], ``width_px``.
        corrected: per env the corrected grasp (position, yaw, width) or None when no policy corrected it.
        executed: per env the pose the fingers closed at, after the last attempt.
        last_outcome: per env the outcome name of the last attempt.
        attempts, successes: of the current mode ("train", "evaluate" or "manual").
        success_ci: 95% Wilson interval of the success rate.
        attempts_per_s: attempts per wall-clock second over the last batch.
        planner_status / planner_name / message: what the planner did and the last message for the user.
        training / evaluating / updates / has_policy / busy: modes, gradient updates, current command.
    """

    version: int = 0
    geometry: SceneGeometry | None = None
    depth: np.ndarray | None = None
    points: np.ndarray | None = None
    q_map: np.ndarray | None = None
    q_map_source: str = ""
    q_map_grid: tuple[int, int] = (1, 0)
    proposed: list[list[dict]] = field(default_factory=list)
    corrected: list[dict] | None = None
    executed: list[dict] | None = None
    last_outcome: list[str] | None = None
    mode: str = "manual"
    attempts: int = 0
    successes: int = 0
    success_ci: tuple[float, float] = (0.0, 1.0)
    attempts_per_s: float = 0.0
    planner_status: PlannerStatus = PlannerStatus.STARTING
    planner_name: str = ""
    message: str = ""
    training: bool = False
    evaluating: bool = False
    updates: int = 0
    has_policy: bool = False
    has_trainer: bool = False
    busy: str = "starting"

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else float("nan")
