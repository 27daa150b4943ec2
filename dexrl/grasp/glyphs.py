"""Drawing grasps into RGB images: a parallel-jaw glyph (the closing line with a short bar per jaw)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["draw_jaw_glyphs"]


def draw_jaw_glyphs(
    rgb: np.ndarray, centers, angles, widths_px, colors, thickness: int = 2
) -> np.ndarray:
    """Draw jaw glyphs on a copy of ``rgb`` (H, W, 3) uint8.

    Args:
        centers: (n, 2) pixel centres (u, v). angles: (n,) jaw axis angles in the image [rad].
        widths_px: (n,) jaw opening in pixels. colors: n RGB tuples.
    """
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    for (u, v), angle, width, color in zip(centers, angles, widths_px, colors):
        du, dv = math.cos(angle) * width / 2, math.sin(angle) * width / 2
        draw.line([(u - du, v - dv), (u + du, v + dv)], fill=tuple(color), width=thickness)
        bar_u, bar_v = -dv * 0.35, du * 0.35  # jaw bars perpendicular to the closing axis
        for sign in (-1, 1):
            ju, jv = u + sign * du, v + sign * dv
            draw.line([(ju - bar_u, jv - bar_v), (ju + bar_u, jv + bar_v)], fill=tuple(color), width=thickness + 1)
        draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=tuple(color))
    return np.asarray(image)
