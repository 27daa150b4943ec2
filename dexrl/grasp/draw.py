"""Pictures of planner output: a quality map laid over a depth image, with grasps drawn as jaw glyphs.

Everything works on numpy RGB images (H, W, 3) uint8, so every front-end (CLI, web panel, Isaac Sim panel) can
use it. Quality maps live on a planner's output grid: cell (h, w) is centred on pixel (x0 + s w, y0 + s h) for
stride s and offset (x0, y0) (FC-GQ-CNN: s = 4, x0 = y0 = 48).
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from .glyphs import draw_jaw_glyphs

__all__ = ["depth_to_gray", "draw_grasps", "overlay_q_map", "plan_picture"]

Q_COLORMAP = "inferno"


def depth_to_gray(depth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Depth (H, W) [m] as grey RGB (H, W, 3) uint8: near is bright, missing (0) black, outside ``mask``
    dimmed. The grey levels span the valid depths inside the mask (the whole image without one)."""
    valid = depth > 0
    inside = valid if mask is None else valid & mask
    if not inside.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    near, far = float(depth[inside].min()), float(depth[inside].max())
    level = np.clip((far - depth) / max(far - near, 1e-6), 0.0, 1.0) * 200 + 40
    level = np.where(valid, level, 0)
    if mask is not None:
        level = np.where(mask, level, level * 0.4)
    return np.repeat(level.astype(np.uint8)[..., None], 3, axis=-1)


def overlay_q_map(
    rgb: np.ndarray,
    q_map: np.ndarray,
    stride: int,
    offset: int,
    alpha: float = 0.6,
    colormap: str = Q_COLORMAP,
) -> np.ndarray:
    """Blend a quality map onto ``rgb`` (H, W, 3).

    Args:
        q_map: (h, w) qualities in [0, 1], or (A, h, w) per angle bin, of which the best over angles is shown.
        stride, offset: cell (h, w) covers the stride x stride pixels centred on
            (offset + stride w, offset + stride h).
        alpha: opacity of the map where q = 1; it fades with q, so low-quality regions show the depth image.
    """
    q = q_map.max(axis=0) if q_map.ndim == 3 else q_map
    height, width = rgb.shape[:2]
    row_cell = np.floor((np.arange(height) - offset + stride / 2) / stride).astype(int)
    col_cell = np.floor((np.arange(width) - offset + stride / 2) / stride).astype(int)
    rows_ok = (row_cell >= 0) & (row_cell < q.shape[0])
    cols_ok = (col_cell >= 0) & (col_cell < q.shape[1])
    per_pixel = np.zeros((height, width), np.float32)
    per_pixel[np.ix_(rows_ok, cols_ok)] = q[np.ix_(row_cell[rows_ok], col_cell[cols_ok])]
    colors = colormaps[colormap](per_pixel)[..., :3] * 255
    weight = (alpha * per_pixel)[..., None]
    return (rgb * (1 - weight) + colors * weight).astype(np.uint8)


def draw_grasps(
    rgb: np.ndarray,
    centers: np.ndarray,
    angles: np.ndarray,
    widths_px: np.ndarray,
    q: np.ndarray,
    colormap: str = "RdYlGn",
) -> np.ndarray:
    """Draw grasps as jaw glyphs coloured by quality (red = 0 ... green = 1), the best drawn last (on top).

    Args:
        centers: (n, 2) pixel centres (u, v). angles: (n,) jaw axis angles [rad].
        widths_px: (n,) openings [px].
        q: (n,) qualities in [0, 1].
    """
    order = np.argsort(q)
    colors = (colormaps[colormap](np.clip(q[order], 0, 1))[:, :3] * 255).astype(int)
    return draw_jaw_glyphs(rgb, centers[order], angles[order], widths_px[order], [tuple(c) for c in colors])


def plan_picture(
    depth: np.ndarray,
    q_map: np.ndarray,
    centers: np.ndarray,
    angles: np.ndarray,
    widths_px: np.ndarray,
    q: np.ndarray,
    stride: int,
    offset: int,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Depth in grey, the quality map over it, and the grasps on top: (H, W, 3) uint8. See
    :func:`overlay_q_map` and :func:`draw_grasps` for the arguments."""
    picture = overlay_q_map(depth_to_gray(depth, mask), q_map, stride, offset)
    return draw_grasps(picture, centers, angles, widths_px, q)
