"""The baseline planner (highest object that fits the jaws, across its minor axis) and planner input checks."""

import math

import pytest
import torch

from dexrl.grasp import PHOXI_S, NoValidGrasps, PlannerInputError
from dexrl.grasp.baseline import HighestObjectPlanner

FLOOR = 0.6  # [m] camera to bin floor


def _scene(boxes):
    """Depth images of axis-aligned boxes (u0, u1, v0, v1, height [m]) on a flat floor."""
    depth = torch.full((1, PHOXI_S.height, PHOXI_S.width), FLOOR)
    for u0, u1, v0, v1, height in boxes:
        depth[0, v0:v1, u0:u1] = FLOOR - height
    return depth


def test_grasps_the_highest_object_across_its_minor_axis():
    # A bar 80 px long along u and 30 px wide (about 3 cm at 0.55 m), standing 5 cm tall.
    depth = _scene([(200, 280, 150, 180, 0.05)])
    plan = HighestObjectPlanner().plan(depth, PHOXI_S)
    best = plan.best
    assert best.center[0].tolist() == pytest.approx([239.5, 164.5], abs=0.5)
    assert abs(math.sin(best.angle[0].item())) == pytest.approx(1.0, abs=1e-3)  # jaws close along v
    assert best.depth[0].item() == pytest.approx(FLOOR - 0.05 + 0.035, abs=1e-5)
    assert plan.valid[0, 0] and plan.positions_cam[0, 0, 2].item() == pytest.approx(best.depth[0].item())


def test_skips_an_object_wider_than_the_jaws_and_keeps_fingertips_above_the_floor():
    wide = (300, 420, 100, 220, 0.08)  # 12 cm square block, the highest
    thin = (100, 160, 250, 270, 0.02)  # a 2 cm flat bar
    plan = HighestObjectPlanner().plan(_scene([wide, thin]), PHOXI_S)
    u, v = plan.best.center[0].tolist()
    assert 100 <= u <= 160 and 250 <= v <= 270
    assert plan.best.depth[0].item() == pytest.approx(FLOOR - 0.013, abs=1e-5)  # not below the floor


def test_bad_inputs_raise_typed_errors():
    planner = HighestObjectPlanner()
    depth = _scene([])
    with pytest.raises(PlannerInputError, match="NaN"):
        planner.plan(torch.where(depth > 0, torch.nan, depth), PHOXI_S)
    with pytest.raises(PlannerInputError, match="all zero"):
        planner.plan(torch.zeros_like(depth), PHOXI_S)
    with pytest.raises(PlannerInputError, match=r"\(B, H, W\)"):
        planner.plan(depth[0], PHOXI_S)
    with pytest.raises(NoValidGrasps):
        planner.plan(depth, PHOXI_S, mask=torch.zeros_like(depth, dtype=torch.bool))
