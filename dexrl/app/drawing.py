"""What every front-end draws from a :class:`SessionState`, as plain numpy and text (no UI toolkit).

The web panel (``dexrl.panel``) and the Isaac Sim extension (``exts/dexrl.ui``) both draw from here: the
selected env's q-map picture, grasp glyphs as 3D line segments, the bin outline, and the status lines.
"""

from __future__ import annotations

import math

import numpy as np

from dexrl.grasp.draw import depth_to_gray, plan_picture

from .state import SessionState

__all__ = [
    "FINGER_HEIGHT",
    "JAW_LENGTH",
    "bin_outline_segments",
    "grasp_segments",
    "jaw_segments",
    "q_picture",
    "rgba",
    "status_markdown",
    "status_rows",
    "status_text",
]

JAW_LENGTH = 0.02  # [m] length of the bar drawn for each jaw
FINGER_HEIGHT = 0.05  # [m] how far the drawn fingers reach up from the grasp centre


# ---------------------------------------------------------------------- 3D line geometry
def jaw_segments(position: np.ndarray, yaw: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Line segments (n * 6, 2, 3) [m] of n top-down grasps: the closing line, a bar at each jaw, each finger
    reaching up and the bridge joining them (a gripper outline).

    Args:
        position: (n, 3) grasp centres [m]. yaw: (n,) jaw axis yaw [rad]. width: (n,) jaw opening [m].
    """
    axis = np.stack((np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)), -1)  # closing direction
    across = np.stack((-np.sin(yaw), np.cos(yaw), np.zeros_like(yaw)), -1)  # along each jaw
    half = (width / 2)[:, None] * axis
    left, right = position - half, position + half
    bar = across * JAW_LENGTH / 2
    up = np.array([0.0, 0.0, FINGER_HEIGHT])
    segments = [
        (left, right),
        (left - bar, left + bar),
        (right - bar, right + bar),
        (left, left + up),
        (right, right + up),
        (left + up, right + up),
    ]
    return np.stack([np.stack(pair, 1) for pair in segments], 1).reshape(-1, 2, 3).astype(np.float32)


def grasp_segments(grasps: list[dict]) -> np.ndarray:
    """Jaw glyphs (n * 6, 2, 3) [m] of grasp records (``position``, ``yaw``, ``width``, as published in
    ``SessionState.proposed`` / ``corrected``), in their own (world) frame; (0, 2, 3) for none."""
    if not grasps:
        return np.zeros((0, 2, 3), np.float32)
    position = np.array([g["position"] for g in grasps], np.float64).reshape(-1, 3)
    yaw = np.array([g["yaw"] for g in grasps], np.float64)
    width = np.array([g["width"] for g in grasps], np.float64)
    return jaw_segments(position, yaw, width)


def bin_outline_segments(
    interior_size: tuple[float, float], floor_z: float, wall_height: float
) -> np.ndarray:
    """The 12 edges (12, 2, 3) [m] of the bin's inside box, env-local: floor rectangle, rim, and corners."""
    half_x, half_y = interior_size[0] / 2, interior_size[1] / 2
    corners = np.array([(-half_x, -half_y), (half_x, -half_y), (half_x, half_y), (-half_x, half_y)])
    bottom = np.column_stack((corners, np.full(4, floor_z)))
    top = np.column_stack((corners, np.full(4, floor_z + wall_height)))
    following = np.roll(np.arange(4), -1)
    edges = [
        np.stack((bottom, bottom[following]), 1),
        np.stack((top, top[following]), 1),
        np.stack((bottom, top), 1),
    ]
    return np.concatenate(edges).astype(np.float32)


# ---------------------------------------------------------------------- images
def q_picture(state: SessionState, env: int) -> np.ndarray:
    """The env's depth in grey with the q-map blended over it and the proposed grasps on top, (H, W, 3) uint8;
    the depth alone before a plan. ``state.depth`` must be set."""
    depth = state.depth[env]
    if state.q_map is None or not state.proposed:
        return depth_to_gray(depth)
    grasps = state.proposed[env]
    centers = np.array([g["center"] for g in grasps], np.float32).reshape(-1, 2)
    angles = np.array([g["angle"] for g in grasps], np.float32)
    widths = np.array([g["width_px"] for g in grasps], np.float32)
    q = np.array([g["q"] for g in grasps], np.float32)
    stride, offset = state.q_map_grid
    return plan_picture(depth, state.q_map[env], centers, angles, widths, q, stride, offset)


def rgba(image: np.ndarray) -> np.ndarray:
    """A grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) uint8 image as C-contiguous opaque RGBA (H, W, 4) uint8,
    the layout of Kit's ``omni.ui.ByteImageProvider`` (RGBA8, rows top to bottom)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[-1] == 4:
        return np.ascontiguousarray(image)
    out = np.empty((*image.shape[:2], 4), np.uint8)
    out[..., :3] = image  # a grey channel broadcasts to R, G and B
    out[..., 3] = 255
    return out


# ---------------------------------------------------------------------- status
def status_rows(state: SessionState, env: int) -> list[list[tuple[str, str]]]:
    """The status as lines of (label, value) pairs: planner, q-map source, grasps shown, mode, success with its
    95% interval, speed and SAC updates, the env's last outcome, and the last message."""
    low, high = state.success_ci
    rate = (
        "n/a"
        if not state.attempts
        else f"{100 * state.success_rate:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
    )
    outcome = state.last_outcome[env] if state.last_outcome else "-"
    glyphs = len(state.proposed[env]) if state.proposed else 0
    speed = (
        "-"
        if not math.isfinite(state.attempts_per_s) or not state.attempts_per_s
        else f"{state.attempts_per_s:.2f}"
    )
    mode = [("Mode", state.mode)] + ([("busy", state.busy)] if state.busy else [])
    return [
        [("Planner", f"{state.planner_status.value} ({state.planner_name})")],
        [("Q-map", state.q_map_source or "not planned yet")],
        [("Grasps shown", f"{glyphs} proposed" + (", corrected" if state.corrected else ""))],
        mode,
        [("Success", f"{rate} ({state.successes}/{state.attempts})")],
        [("Attempts/s", speed), ("SAC updates", str(state.updates))],
        [(f"Last outcome (env {env})", outcome)],
        [("Message", state.message)],
    ]


def status_markdown(state: SessionState, env: int) -> str:
    """:func:`status_rows` as Markdown, labels in bold, one line each."""
    return "  \n".join(
        " - ".join(f"**{label}:** {value}" for label, value in row) for row in status_rows(state, env)
    )


def status_text(state: SessionState, env: int) -> str:
    """:func:`status_rows` as plain text, one line each."""
    return "\n".join(
        " - ".join(f"{label}: {value}" for label, value in row) for row in status_rows(state, env)
    )
