"""Candidate grasp sampling for synthesis (pure torch: synthetic depth images of boxes on a floor)."""

import math

import pytest
import torch

from dexrl.grasp import PHOXI_S
from dexrl.synth.candidates import CandidateMix, CandidateSampler, object_pixels

FLOOR, TOP = 0.60, 0.56  # [m] camera distance to the bin floor and to the top of a 4 cm box


def _boxes(b: int = 6) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int, int]]]:
    """B images of one box each at a different place; the whole image is the bin mask."""
    h, w = PHOXI_S.height, PHOXI_S.width
    depth = torch.full((b, h, w), FLOOR)
    boxes = []
    for i in range(b):
        v0, u0 = 60 + 30 * i, 80 + 50 * i
        depth[i, v0 : v0 + 40, u0 : u0 + 25] = TOP
        boxes.append((u0, v0, u0 + 25, v0 + 40))
    return depth, torch.ones_like(depth, dtype=torch.bool), boxes


def test_object_pixels_are_those_above_the_floor():
    depth, mask, boxes = _boxes()
    objects = object_pixels(depth, mask)
    assert int(objects.sum()) == 6 * 40 * 25
    mask[0] = False
    assert not object_pixels(depth, mask)[0].any()


@pytest.mark.parametrize("source", ["uniform", "edge"])
def test_candidates_lie_on_or_across_the_object_and_reach_below_its_top(source):
    depth, mask, boxes = _boxes()
    sampler = CandidateSampler(CandidateMix.parse(f"{source}=1"), PHOXI_S, generator=torch.Generator().manual_seed(3))
    for _ in range(5):
        grasps, chosen = sampler.sample(depth, mask)
        assert (chosen == ("uniform", "edge").index(source)).all()
        for (u0, v0, u1, v1), (u, v) in zip(boxes, grasps.center.tolist()):
            margin = 0 if source == "uniform" else 25  # an edge grasp's centre may lie up to a half opening outside
            assert u0 - margin <= u <= u1 + margin and v0 - margin <= v <= v1 + margin
        assert ((grasps.depth >= TOP) & (grasps.depth <= FLOOR - sampler.tip_clearance + 1e-6)).all()
        assert ((grasps.angle >= -math.pi / 2) & (grasps.angle < math.pi / 2)).all()


def test_edge_grasps_close_across_the_edge():
    depth, mask, _ = _boxes(1)
    sampler = CandidateSampler(CandidateMix.parse("edge=1"), PHOXI_S, generator=torch.Generator().manual_seed(0))
    # A box edge is vertical or horizontal in the image and the jaw axis perpendicular to it; only pixels near
    # the corners (a small share of the outline) see a diagonal gradient.
    angles = torch.cat([sampler.sample(depth, mask)[0].angle for _ in range(40)]).abs()
    across = (angles < 0.1) | ((angles - math.pi / 2).abs() < 0.1)
    assert across.float().mean() >= 0.7


def test_seeded_samplers_repeat():
    depth, mask, _ = _boxes()
    draw = lambda: CandidateSampler(CandidateMix(), PHOXI_S, generator=torch.Generator().manual_seed(7)).sample(depth, mask)[0]  # noqa: E731
    first, second = draw(), draw()
    assert torch.equal(first.center, second.center) and torch.equal(first.depth, second.depth)


@pytest.mark.parametrize(
    ("text", "message"),
    [("uniform=0,edge=0", "no source"), ("grid=1", "unknown candidate source 'grid'"), ("edge=-1", "must be >= 0"),
     ("edge=a", "must be a number")],
)
def test_a_bad_mix_names_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        CandidateMix.parse(text)


def test_the_policy_source_needs_a_planner():
    with pytest.raises(ValueError, match="no planner"):
        CandidateSampler(CandidateMix.parse("policy=1"), PHOXI_S)
