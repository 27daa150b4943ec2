"""Grasp types, the pinhole camera model and frame conversions (no simulator imports)."""

from .camera import (
    PHOXI_S,
    CameraExtrinsics,
    CameraIntrinsics,
    camera_parameters,
    deproject_per_camera,
    look_at_rotation,
)
from .planner import NoValidGrasps, Planner, PlannerError, PlannerInputError, PlannerUnavailable, PlanResult
from .types import GraspPoses, ImageGrasps, image_to_world, world_to_image, wrap_half_turn

__all__ = [
    "PHOXI_S",
    "CameraExtrinsics",
    "CameraIntrinsics",
    "GraspPoses",
    "NoValidGrasps",
    "PlanResult",
    "Planner",
    "PlannerError",
    "PlannerInputError",
    "PlannerUnavailable",
    "camera_parameters",
    "deproject_per_camera",
    "ImageGrasps",
    "image_to_world",
    "look_at_rotation",
    "world_to_image",
    "wrap_half_turn",
]
