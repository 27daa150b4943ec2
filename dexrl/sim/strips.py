"""PNG strips of grasp attempts: depth with the planned grasp drawn, and the view after the lift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dexrl.grasp.glyphs import draw_jaw_glyphs

from .grasp_runner import AttemptBatch
from .outputs import depth_to_rgb, outline

__all__ = ["write_attempt_strips"]

OUTCOME_COLORS = {0: (40, 220, 60), 1: (240, 200, 40), 2: (250, 140, 30), 3: (240, 40, 40)}


def write_attempt_strips(batch: AttemptBatch, out: Path, prefix: str, fx: float, max_envs: int = 16) -> list[Path]:
    """One PNG per env (up to ``max_envs``): [depth + mask outline + grasp | depth after the lift].
    ``fx`` [px] scales the jaw glyph to the opening's size in the image."""
    depth = batch.depth.cpu().numpy()
    mask = batch.mask.cpu().numpy()
    after = batch.result.depth_after_lift
    after = None if after is None else after.cpu().numpy()
    best = batch.plan.best
    center, angle, grasp_depth = best.center.cpu().numpy(), best.angle.cpu().numpy(), best.depth.cpu().numpy()
    width_m = best.width.cpu().numpy()
    outcomes = batch.result.outcome.cpu().numpy()
    paths = []
    for env in range(min(max_envs, depth.shape[0])):  # output only
        near, far = float(depth[env][depth[env] > 0].min()), float(depth[env].max())
        before = depth_to_rgb(depth[env], near, far)
        before[outline(mask[env])] = (255, 40, 40)
        color = OUTCOME_COLORS.get(int(outcomes[env]), (200, 200, 200))
        width_px = width_m[env] * fx / max(grasp_depth[env], 1e-3)
        before = draw_jaw_glyphs(before, [center[env]], [angle[env]], [width_px], [color])
        panels = [before] if after is None else [before, depth_to_rgb(after[env], near - 0.2, far)]
        path = out / f"{prefix}_env{env:04d}.png"
        Image.fromarray(np.concatenate(panels, axis=1)).save(path)
        paths.append(path)
    return paths
