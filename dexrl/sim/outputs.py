"""Files a person can open: colour-mapped depth PNGs with the bin mask outlined, and JSON records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

__all__ = ["depth_to_rgb", "outline", "write_depth_png", "write_json"]


def depth_to_rgb(depth: np.ndarray, near: float | None = None, far: float | None = None) -> np.ndarray:
    """Colour-map a depth image (H, W) [m] to RGB uint8 (H, W, 3): near is bright; missing pixels black."""
    valid = depth > 0
    if not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    near = float(depth[valid].min()) if near is None else near
    far = float(depth[valid].max()) if far is None else far
    scaled = np.clip((far - depth) / max(far - near, 1e-6), 0.0, 1.0)
    rgb = (colormaps["viridis"](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (H, W): inside pixels with a 4-neighbour outside."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def write_depth_png(path: str | Path, depth: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Write the colour-mapped depth with the mask's outline in red; the colours span the depths in the mask."""
    inside = depth[mask & (depth > 0)] if mask is not None else np.empty(0)
    rgb = depth_to_rgb(depth, *(float(inside.min()), float(inside.max())) if inside.size else (None, None))
    if mask is not None:
        rgb[outline(mask)] = (255, 40, 40)
    Image.fromarray(rgb).save(path)


def write_json(path: str | Path, record: dict) -> None:
    Path(path).write_text(json.dumps(record, indent=2))
