"""The whole-plan pass (``PlannerOptions.whole_plan_images``): device work alone, so that one CUDA graph can
hold a plan. On the CPU it runs without a graph; these tests check that it plans what the step-by-step path
plans, that it never waits for the device, and that faulty images reach the step-by-step path's errors."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from dexrl.gqcnn import bench
from dexrl.gqcnn.fast import holds, window_of_cells
from dexrl.gqcnn.grid import grid_mask
from dexrl.gqcnn.policy import WHOLE_PLAN_INPAINT_ROUNDS, FCGQCNNPlanner, PlannerOptions, _depth_range
from dexrl.gqcnn.preprocess import inpaint, inpaint_rounds
from dexrl.grasp import NoValidGrasps, PlannerInputError, camera_parameters

from test_gqcnn_fast import CAMERA, _heaps

SYNCHRONISING_OPERATORS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero"}
"""Operators whose result the host must wait for on a GPU (a value, a data-dependent size)."""
SYNCHRONISING_METHODS = {"item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy"}
"""Tensor methods that bring values to the host."""


class _DeviceWaits(TorchDispatchMode):
    """Records the synchronising operators that run inside it."""

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in SYNCHRONISING_OPERATORS:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


class _HostReads(TorchFunctionMode):
    """Records the tensor methods called inside it that bring values to the host."""

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in SYNCHRONISING_METHODS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _waits_in(call) -> list[str]:
    seen: list[str] = []
    with _HostReads(seen), _DeviceWaits(seen):
        call()
    return seen


def _planners(network, **options):
    step_by_step = FCGQCNNPlanner(network, "cpu", PlannerOptions(path="fast", whole_plan_images=0, **options))
    whole = FCGQCNNPlanner(network, "cpu", PlannerOptions(path="fast", whole_plan_images=4, **options))
    return step_by_step, whole


@pytest.mark.parametrize("options", [{}, {"jaw_clearance": 0.005, "jaws_inside_mask": True, "min_distance_px": 20}])
def test_a_whole_plan_returns_the_step_by_step_grasps(network, options):
    depth, mask = _heaps(3, seed=4)
    step_by_step, whole = _planners(network, **options)
    expected = step_by_step.plan(depth, CAMERA, mask, k=5, return_q_map=True)
    result = whole.plan(depth, CAMERA, mask, k=5, return_q_map=True)
    assert whole._whole_plans and "network" not in result.timings  # planned in one pass
    for field in ("center", "angle", "depth", "width"):
        assert torch.equal(getattr(result.grasps, field), getattr(expected.grasps, field)), field
    torch.testing.assert_close(result.grasps.q, expected.grasps.q, rtol=0, atol=1e-6)
    assert torch.equal(result.valid, expected.valid)
    torch.testing.assert_close(result.positions_cam, expected.positions_cam, rtol=0, atol=1e-6)
    # the q-map too: the whole grid is evaluated, but it is 0 outside the mask's box, as step by step
    torch.testing.assert_close(result.q_map, expected.q_map, rtol=0, atol=2e-2)
    assert torch.equal(result.q_map == 0, expected.q_map == 0)


def test_a_whole_plan_runs_the_trunk_on_the_window_of_the_last_mask(network):
    depth, mask = _heaps(2, seed=11)
    step_by_step, whole = _planners(network)
    whole.plan(depth, CAMERA, mask, k=3)  # on the whole grid: learns the mask's window
    window = whole._plan_windows[tuple(depth.shape)]
    box = window_of_cells(grid_mask(mask)).tolist()
    assert holds(window, box) and window != ((0, 27), (0, 47))  # less than the 27 x 47 grid
    result = whole.plan(depth, CAMERA, mask, k=3)
    assert (3, False, window) in whole._whole_plans
    assert torch.equal(result.grasps.center, step_by_step.plan(depth, CAMERA, mask, k=3).grasps.center)
    # admissible cells outside the window: planned again on a window that holds them
    moved = torch.zeros_like(mask)
    moved[:, :, :90] = True
    assert not holds(window, window_of_cells(grid_mask(moved)).tolist())
    result = whole.plan(depth, CAMERA, moved, k=3)
    expected = step_by_step.plan(depth, CAMERA, moved, k=3)
    assert torch.equal(result.grasps.center, expected.grasps.center)
    torch.testing.assert_close(result.grasps.q, expected.grasps.q, rtol=0, atol=1e-6)
    grown = whole._plan_windows[tuple(depth.shape)]
    assert holds(grown, window_of_cells(grid_mask(moved)).tolist()) and holds(grown, box) and grown != window


def test_the_steps_fused_on_cuda_trace_whole_and_compute_the_same(network):
    depth, mask = _heaps(2, seed=12)
    step_by_step, whole = _planners(network, rescore_top=4)
    quality = step_by_step.evaluate(depth, CAMERA, mask)
    admissible = step_by_step.passing(quality)
    pairs = step_by_step._fast.rescore(
        step_by_step._pair_scores(quality.q, admissible), quality.depth, quality.grasp_depth, 4
    )
    q = quality.q[..., 2:20, 3:40]
    box = torch.tensor([4, 15, 5, 30])
    faulty = depth.clone()
    faulty[1, 7, 9] = float("nan")
    calls = [  # (function, arguments, keyword arguments) as the whole plan calls them
        (step_by_step._input_checks, (faulty, mask), {}),
        (_depth_range, (quality.depth, mask), {}),
        (step_by_step._fast._shifts, (quality.grasp_depth,), {}),
        (step_by_step._fast._on_grid, (q, box), {"window": ((2, 20), (3, 40)), "size": (27, 47)}),
        (step_by_step._pair_scores, (quality.q, admissible), {}),
        (
            step_by_step._fast._pair_cells,
            (pairs.depth_bin * 27 * 47 + 5, quality.grasp_depth),
            {"rows": 27, "cols": 47},
        ),
        (
            step_by_step._best_rescored_grasps,
            (pairs.q, pairs.depth_bin, pairs.row, pairs.col, admissible, quality.grasp_depth, quality.cameras),
            {"k": 3, "shape": quality.q.shape},
        ),
    ]
    for function, args, kwargs in calls:
        torch._dynamo.reset()
        traced = torch.compile(function, backend="eager", fullgraph=True)  # raises on a graph break
        for expected, fused in zip(function(*args, **kwargs), traced(*args, **kwargs), strict=True):
            assert torch.equal(expected, fused), function.__name__
    on_grid = step_by_step._fast._on_grid(q, box, window=((2, 20), (3, 40)), size=(27, 47))
    assert on_grid.shape == quality.q.shape
    assert (on_grid[..., :4, :] == 0).all() and (on_grid[..., 30:] == 0).all()
    torch.testing.assert_close(on_grid[..., 4:15, 5:30], quality.q[..., 4:15, 5:30], rtol=0, atol=0)


def test_a_whole_plan_never_waits_for_the_device(network):
    depth, mask = _heaps(2, seed=5)
    step_by_step, whole = _planners(network, jaw_clearance=0.005, min_distance_px=20)
    params = camera_parameters([CAMERA, CAMERA])
    assert _waits_in(lambda: whole._plan_on_device(depth, mask, params, k=3, return_q_map=True)) == []
    # the probes see the step-by-step path's waits
    assert {"tolist", "__bool__"} <= set(_waits_in(lambda: step_by_step.plan(depth, CAMERA, mask, k=3)))


def test_faulty_images_get_the_step_by_step_errors(network):
    depth, mask = _heaps(2, seed=6)
    _, whole = _planners(network)
    nan_depth = depth.clone()
    nan_depth[1, 5, 5] = float("nan")
    with pytest.raises(PlannerInputError, match="NaN"):
        whole.plan(nan_depth, CAMERA, mask)
    with pytest.raises(PlannerInputError, match="all zero"):
        whole.plan(torch.zeros_like(depth), CAMERA, mask)
    with pytest.raises(NoValidGrasps, match="leaves no grasp centre"):
        whole.plan(depth, CAMERA, torch.zeros_like(mask))
    params = camera_parameters([CAMERA, CAMERA])
    *_, faults, status = whole._plan_on_device(nan_depth, mask, params, k=1, return_q_map=False)
    assert status[0] == 1 and status[1:].tolist() == window_of_cells(grid_mask(mask)).tolist()
    assert faults.tolist() == [False, True]  # flagged per image


def test_holes_that_need_more_rounds_are_inpainted_step_by_step(network):
    depth, mask = _heaps(1, seed=10)
    filled, unfinished = inpaint_rounds(depth, WHOLE_PLAN_INPAINT_ROUNDS)
    assert not unfinished.any() and torch.equal(filled, inpaint(depth))  # the heaps' small holes
    depth[:, 60:120, 80:200] = 0  # a hole that takes more rounds
    filled, unfinished = inpaint_rounds(depth, WHOLE_PLAN_INPAINT_ROUNDS)
    assert unfinished.all() and not torch.equal(filled, inpaint(depth))
    step_by_step, whole = _planners(network)
    expected = step_by_step.plan(depth, CAMERA, mask, k=3)
    result = whole.plan(depth, CAMERA, mask, k=3)  # flagged, then planned step by step
    assert torch.equal(result.grasps.center, expected.grasps.center)
    assert "network" in result.timings


def test_batches_above_the_limit_go_step_by_step(network):
    depth, mask = bench.bin_images(1, 3)
    _, whole = _planners(network)
    depth, mask = depth.expand(5, -1, -1)[:, 90:290, 120:400], mask.expand(5, -1, -1)[:, 90:290, 120:400]
    assert "network" in whole.plan(depth.contiguous(), CAMERA, mask.contiguous()).timings
    assert not whole._whole_plans
