"""The fast FC-GQ-CNN path: each transformation against the plain float32 network, and the agreement check."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dexrl.gqcnn import bench
from dexrl.gqcnn.agreement import agreement
from dexrl.gqcnn.fast import (
    PLAN_WINDOW_QUANTUM,
    WINDOW_QUANTUM,
    RowUnfoldedConv,
    SpectralConv,
    TrunkShapes,
    cell_crops,
    cpu_has_native_bf16,
    holds,
    live_depth_bins,
    plan_window,
    window_of_cells,
)
from dexrl.gqcnn.grid import CROP_SIZE, cell_centers, grid_mask, output_size
from dexrl.gqcnn.model import FCGQCNN, GQCNN
from dexrl.gqcnn.policy import FCGQCNNPlanner, PlannerOptions
from dexrl.gqcnn.preprocess import extract_crops, inpaint
from dexrl.grasp import CameraIntrinsics

ROWS, COLS = slice(90, 290), slice(120, 400)  # a 200 x 280 piece of the bench's bin: heaps, no walls
CAMERA = CameraIntrinsics(fx=552.5, fy=552.5, cx=139.5, cy=99.5, width=280, height=200)


def _heaps(count: int, seed: int):
    """Seeded random heaps (count, 200, 280) [m] with missing patches, and masks of the heap region."""
    depth, mask = bench.bin_images(count, seed)
    mask = mask[:, ROWS, COLS].clone()
    mask[:, :70] = mask[:, :, :30] = mask[:, :, 250:] = False  # the window is less than the image
    return depth[:, ROWS, COLS].contiguous(), mask


def _reference(network, **options) -> FCGQCNNPlanner:
    return FCGQCNNPlanner(
        network, "cpu", PlannerOptions(path="plain", crop_to_mask=False, share_first_conv=False, **options)
    )


def _fast(network, **options) -> FCGQCNNPlanner:
    return FCGQCNNPlanner(network, "cpu", PlannerOptions(path="fast", **options))


def test_shared_first_convolution_equals_conv1_1_per_depth_bin(network):
    depth, _ = _heaps(2, seed=1)
    images = depth[:, None]
    grasp_depth = torch.tensor([[0.50, 0.53, 0.56, 0.60], [0.52, 0.55, 0.57, 0.59]])
    reference = grasp_depth.mean(dim=1)
    with torch.no_grad():
        shared = network.shared_first_conv(images, reference)
        shifted = shared[:, None] + network.first_conv_shifts(grasp_depth, reference)[..., None, None]
        norm, conv = network.normalization, network.image_stream.conv1_1
        for depth_bin in range(4):
            z = grasp_depth[:, depth_bin, None, None, None]
            per_bin = conv((images - z - norm.image_mean) / norm.image_std)
            torch.testing.assert_close(shifted[:, depth_bin], per_bin, rtol=1e-5, atol=1e-5)


def test_window_of_cells_is_the_bounding_box_over_the_batch():
    cells = torch.zeros(3, 20, 30, dtype=torch.bool)
    cells[0, 4:7, 10:12] = True
    cells[2, 9, 3] = True
    assert window_of_cells(cells).tolist() == [4, 10, 3, 12]


def test_a_plan_window_holds_its_box_in_whole_quanta_and_only_grows():
    window = plan_window([5, 14, 3, 12], (74, 106))
    assert window == ((5, 5 + 3 * PLAN_WINDOW_QUANTUM), (3, 3 + 3 * PLAN_WINDOW_QUANTUM))
    assert holds(window, [5, 14, 3, 12]) and not holds(window, [5, 14, 2, 12])
    grown = plan_window([40, 45, 100, 106], (74, 106), window)
    assert holds(grown, [40, 45, 100, 106]) and holds(grown, [5, 17, 3, 15])
    assert (grown[0][1] - grown[0][0]) % PLAN_WINDOW_QUANTUM == 0 and grown[1] == (2, 106)  # kept in the map
    assert plan_window([71, 74, 0, 106], (74, 106)) == ((70, 74), (0, 106))


def test_cell_crops_are_the_crops_at_the_cells_centres():
    depth = torch.rand(2, 386, 516)
    rows, cols = output_size(386, 516)
    cells = grid_mask(torch.ones(2, 386, 516, dtype=torch.bool))
    # admissible cells at the corners of the admissible block and inside it, per image
    first, last = cells[0].nonzero()[0], cells[0].nonzero()[-1]
    row = torch.tensor([[first[0], last[0], 30], [last[0], first[0], 5]])
    col = torch.tensor([[first[1], last[1], 50], [first[1], last[1], 99]])
    expected = extract_crops(depth, cell_centers(row, col))
    assert torch.equal(cell_crops(depth, row, col), expected)
    assert (rows, cols) == (74, 106) and last[0] < rows - 1  # the grid's last row is not admissible ...
    edge = cell_crops(depth, torch.tensor([[rows - 1]] * 2), torch.tensor([[cols - 1]] * 2))
    one_row_up = cell_centers(torch.tensor([[rows - 2]] * 2), torch.tensor([[cols - 1]] * 2))
    nearest = extract_crops(depth, one_row_up)
    assert torch.equal(edge, nearest)  # ... and takes the nearest crop inside the image (one row up)


def test_live_depth_bins_follow_the_deepest_surface_the_jaw_tips_may_reach():
    depth = torch.full((1, 100, 100), 0.70)
    depth[:, 20:80, 20:80] = 0.55
    mask = depth < 0.6
    grasp_depth = torch.tensor([[0.50, 0.54, 0.56, 0.695, 0.70]])
    inside = PlannerOptions(jaws_inside_mask=True, jaw_clearance=0.01)
    assert live_depth_bins(depth, mask, grasp_depth, inside).tolist() == [[True, True, False, False, False]]
    anywhere = PlannerOptions(jaw_clearance=0.01)
    assert live_depth_bins(depth, mask, grasp_depth, anywhere).tolist() == [[True, True, True, False, False]]
    assert live_depth_bins(depth, mask, grasp_depth, PlannerOptions()).all()


def test_window_map_equals_the_full_map_inside_the_box(network):
    depth, mask = _heaps(2, seed=2)
    full = _reference(network).evaluate(depth, CAMERA, mask)
    windowed = _fast(network, precision="fp32", rescore_top=0).evaluate(depth, CAMERA, mask)
    first_row, end_row, first_col, end_col = window_of_cells(grid_mask(mask)).tolist()
    assert (first_row, first_col) > (0, 0) and end_col < full.q.shape[-1]  # a real window
    inside = (..., slice(first_row, end_row), slice(first_col, end_col))
    torch.testing.assert_close(windowed.q[inside], full.q[inside], rtol=0, atol=1e-5)
    outside = windowed.q.clone()
    outside[inside] = 0
    assert not outside.any()


def test_boxes_a_few_cells_apart_share_one_trunk_shape(network):
    """torch.compile specialises on shapes: the trunk's window is grown to whole quanta of cells."""
    depth, mask = _heaps(1, seed=4)
    planner = _fast(network, precision="fp32", rescore_top=0)
    shapes = []
    trunk = planner._fast._run
    planner._fast._run = lambda window, *rest: shapes.append(tuple(window.shape)) or trunk(window, *rest)
    boxes = []
    for cut in (200, 196, 192):  # pixels: one cell of the 4-pixel stride apart
        narrower = mask.clone()
        narrower[:, :, cut:] = False
        boxes.append(window_of_cells(grid_mask(narrower)).tolist())
        planner.evaluate(depth, CAMERA, narrower)
    assert len({tuple(box) for box in boxes}) == 3  # three different boxes ...
    assert len(set(shapes)) == 1  # ... one trunk shape
    assert (shapes[0][-1] - CROP_SIZE) // 4 + 1 >= boxes[0][3] - boxes[0][2]  # covering the widest box


def test_trunk_shapes_only_grow_and_hold_what_they_must():
    shapes = TrunkShapes()
    rows, cols = shapes.window([10, 30, 5, 50], (74, 106))
    assert rows[0] <= 10 and rows[1] >= 30 and cols[0] <= 5 and cols[1] >= 50
    assert (rows[1] - rows[0]) % WINDOW_QUANTUM == 0 and (cols[1] - cols[0]) % WINDOW_QUANTUM == 0
    smaller_rows, smaller_cols = shapes.window([20, 25, 60, 70], (74, 106))
    assert smaller_rows[1] - smaller_rows[0] == rows[1] - rows[0]  # a smaller box keeps the window's size
    assert smaller_cols[1] - smaller_cols[0] == cols[1] - cols[0]
    assert smaller_rows[0] <= 20 and smaller_rows[1] >= 25 and smaller_cols[0] <= 60 and smaller_cols[1] >= 70
    assert shapes.window([0, 74, 0, 106], (74, 106)) == ((0, 74), (0, 106))  # capped at the map
    assert shapes.pairs(live=5, available=256, bins=16) == 16
    assert shapes.pairs(live=40, available=256, bins=16) == 64
    assert shapes.pairs(live=3, available=256, bins=16) == 64  # never shrinks
    assert shapes.pairs(live=3, available=48, bins=16) == 16  # a smaller (last) group is counted apart
    assert shapes.pairs(live=200, available=256, bins=16) == 256


def test_skipped_depth_bins_could_not_hold_the_top_grasp(network):
    depth, mask = _heaps(2, seed=3)
    filters = {"jaw_clearance": 0.01}  # the depth bins within 1 cm of the bin floor cannot hold a grasp
    fast = _fast(network, precision="fp32", rescore_top=0, **filters)
    reference = _reference(network, **filters)
    quality = fast.evaluate(depth, CAMERA, mask)
    dead = ~quality.live_bins
    assert dead.any() and quality.live_bins.any(dim=1).all()
    assert not quality.q[dead].any()  # not evaluated
    torch.testing.assert_close(
        quality.live_bins, live_depth_bins(quality.depth, mask, quality.grasp_depth, fast.options)
    )
    # the reference evaluates every bin; none of a dead bin's grasps passes the jaw filters
    reference_quality = reference.evaluate(depth, CAMERA, mask)
    passing = reference.passing(reference_quality)
    assert passing.any() and not passing[dead].any()
    expected, result = reference.plan(depth, CAMERA, mask, k=10), fast.plan(depth, CAMERA, mask, k=10)
    assert torch.equal(result.grasps.center, expected.grasps.center)
    assert torch.equal(result.grasps.depth, expected.grasps.depth)


def test_spectral_convolution_equals_the_direct_one():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 128, 17)
    x = torch.rand(3, 16, 40, 57)
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double())
    spectral = SpectralConv(conv)
    out = spectral(x)
    assert out.shape == expected.shape == (3, 128, 24, 41) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5 * expected.abs().max().item())
    assert torch.equal(spectral(x[:1].bfloat16()), spectral(x[:1].bfloat16().float()))  # any input dtype
    with pytest.raises(ValueError, match="valid convolutions"):
        SpectralConv(torch.nn.Conv2d(16, 128, 17, padding=2))


def test_row_unfolded_convolution_equals_the_direct_one():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 128, 17)
    x = torch.rand(3, 16, 40, 57)
    rows = RowUnfoldedConv(conv)
    unfolded = rows.unfold(x)
    assert unfolded.shape == (3, 16 * 17, 40, 41)
    assert torch.equal(unfolded[:, 5 * 17 + 3], x[:, 5, :, 3:44])  # channel c K + j: channel c shifted by j
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double())
    torch.testing.assert_close(rows(x).double(), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    with pytest.raises(ValueError, match="valid convolutions"):
        RowUnfoldedConv(torch.nn.Conv2d(16, 128, 17, stride=2))


@pytest.mark.parametrize(("seed", "fc3"), [(4, "conv"), (5, "conv"), (4, "fft"), (5, "fft"), (4, "rows")])
def test_fast_path_top_k_equals_the_reference_on_seeded_heaps(network, seed, fc3):
    depth, mask = _heaps(3, seed=seed)
    expected = _reference(network).plan(depth, CAMERA, mask, k=5)
    exact = _fast(network, precision="fp32", rescore_top=0, group_images=2, fc3=fc3).plan(depth, CAMERA, mask, k=5)
    for field in ("center", "angle", "depth"):
        assert torch.equal(getattr(exact.grasps, field), getattr(expected.grasps, field))
    torch.testing.assert_close(exact.grasps.q, expected.grasps.q, rtol=0, atol=1e-5)
    # bfloat16 trunk: its top-5 pairs rescored in float32 give the reference's top 5 and their float32 q
    rescored = _fast(network, rescore_top=5, fc3=fc3).plan(depth, CAMERA, mask, k=5)
    for field in ("center", "angle", "depth"):
        assert torch.equal(getattr(rescored.grasps, field), getattr(expected.grasps, field))
    torch.testing.assert_close(rescored.grasps.q, expected.grasps.q, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_the_top_k_of_the_rescored_pairs_is_the_top_k_of_the_whole_grid(network, k):
    depth, mask = _heaps(2, seed=9)
    planner = _fast(network, rescore_top=3, jaw_clearance=0.005, jaws_inside_mask=True)
    quality = planner.evaluate(depth, CAMERA, mask)
    admissible = planner.passing(quality)
    assert admissible.shape[2] > 1  # the jaw filters depend on the angle
    scores = planner._pair_scores(quality.q, admissible)
    torch.testing.assert_close(scores, torch.where(admissible, quality.q, -3.0).amax(dim=2), rtol=0, atol=0)
    pairs = planner._fast.rescore(scores, quality.depth, quality.grasp_depth, max(3, k))
    # the whole grid ranked: float32-rescored grasps first, then the others by their bfloat16 q
    q = quality.q.clone()
    rescored = pairs.write_into(q)
    ranking = torch.where(admissible, torch.where(rescored, q, q - 2.0), -3.0)
    expected_values, expected_flat = ranking.flatten(1).topk(k, dim=1)
    assert (expected_values[:, 0] >= 0).all()
    assert ((expected_values >= 0) | (expected_values == -3.0)).all()  # every valid one was rescored
    expected = planner._grasps(expected_values, expected_flat, quality.grasp_depth, quality.cameras, q.shape)
    grasps = planner._best_rescored_grasps(
        *(pairs.q, pairs.depth_bin, pairs.row, pairs.col),
        *(admissible, quality.grasp_depth, quality.cameras),
        k=k,
        shape=q.shape,
    )
    assert torch.equal(grasps[1], expected[1])  # valid
    assert torch.equal(grasps[0], expected[0])  # packed: 0 past the valid ones


def test_rescored_grasps_rank_above_the_bfloat16_ones(network):
    depth, mask = _heaps(1, seed=6)
    result = _fast(network, rescore_top=2).plan(depth, CAMERA, mask, k=40)
    reference_q = _reference(network).evaluate(depth, CAMERA, mask).q
    assert result.valid.all() and (result.grasps.q[0, 1:] <= result.grasps.q[0, :-1]).all()
    # 2 pairs x 16 angle bins rescored: the first 32 grasps carry float32 q, the rest bfloat16 q
    best = reference_q.flatten().max()
    torch.testing.assert_close(result.grasps.q[0, 0], best, rtol=0, atol=1e-5)


def test_agreement_counts_a_different_top_grasp(network):
    depth, mask = _heaps(2, seed=7)
    reference = _reference(network)
    same = agreement(_fast(network), reference, depth, mask, CAMERA, k=3).summary()
    assert same["top1_same"] == 1.0 and same["max_abs_dq"] < 1e-5 and same["max_regret"] == 0.0
    torch.manual_seed(8)
    other = FCGQCNN().eval()
    with torch.no_grad():
        other.fc5.weight.mul_(0.1)
    differs = agreement(_reference(other), reference, depth, mask, CAMERA, k=3, batch=1)
    assert not differs.same_top.any() and (differs.regret > 0).all() and (differs.max_abs_dq > 1e-3).all()
    assert (differs.rank_of_reference_top > 0).all()


def test_the_path_is_chosen_by_device_network_and_option(network):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    on_cpu = PlannerOptions().resolved(cpu, network)
    native = "bf16" if cpu_has_native_bf16() else "fp32"  # emulated bfloat16 is 6x slower than float32
    assert (on_cpu.path, on_cpu.precision, on_cpu.fc3) == ("fast", native, "fft")
    on_gpu = PlannerOptions().resolved(cuda, network)
    assert (on_gpu.path, on_gpu.precision, on_gpu.channels_last, on_gpu.fc3) == ("fast", "bf16", True, "triton")
    assert (on_cpu.stream_convs, on_gpu.stream_convs) == ("torch", "triton")  # Triton comes with torch here
    compiled = PlannerOptions(compile_mode="max-autotune").resolved(cuda, network)
    assert (compiled.stream_convs, compiled.fc3) == ("torch", "rows")
    assert (on_cpu.whole_plan_images, on_gpu.whole_plan_images, compiled.whole_plan_images) == (0, 16, 0)
    assert PlannerOptions(path="fast").resolved(cpu, network).fc3 == "fft"
    assert PlannerOptions(path="plain").resolved(cuda, network).precision == "fp32"
    crop_converted = FCGQCNN.from_crop_network(GQCNN())
    assert PlannerOptions().resolved(cuda, crop_converted).path == "plain"
    assert PlannerOptions().resolved(cpu, crop_converted).path == "plain"
    with pytest.raises(ValueError, match="pose stream"):
        FCGQCNNPlanner(crop_converted, "cpu", PlannerOptions(path="fast"))


def test_bench_reads_images_from_an_npz_file(tmp_path):
    depth, mask = _heaps(2, seed=9)
    np.savez(tmp_path / "heaps.npz", depth=depth.numpy(), mask=mask.numpy())
    loaded_depth, loaded_mask, cameras = bench.load_npz_images(str(tmp_path / "heaps.npz"))
    assert torch.equal(loaded_depth, depth) and torch.equal(loaded_mask, mask)
    assert cameras == [CAMERA, CAMERA]  # no intrinsics: centred, fx = fy = 552.5
    np.savez(
        tmp_path / "own.npz", depth=depth.numpy(), mask=mask.numpy(), intrinsics=np.array([500, 510, 140, 90])
    )
    assert bench.load_npz_images(str(tmp_path / "own.npz"))[2][1].fy == 510
    np.savez(tmp_path / "bad.npz", depth=depth.numpy(), mask=mask[:, :10].numpy())
    with pytest.raises(ValueError, match="one shape"):
        bench.load_npz_images(str(tmp_path / "bad.npz"))


def test_inpainting_with_sparse_checks_equals_checking_every_round():
    depth, _ = _heaps(1, seed=10)
    depth[:, 60:120, 80:200] = 0  # a hole that takes many rounds to fill
    small = depth[:, None, ::2, ::2].clone()
    ones = torch.ones(1, 1, 3, 3)
    while True:  # the original policy's loop: stop as soon as no missing pixel has a valid neighbour
        valid = (small > 0).float()
        neighbours = F.conv2d(valid, ones, padding=1)
        fillable = (valid == 0) & (neighbours > 0)
        if not fillable.any():
            break
        small = torch.where(
            fillable, F.conv2d(small * valid, ones, padding=1) / neighbours.clamp(min=1), small
        )
    every_round = F.interpolate(small, size=depth.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    expected = torch.where(depth == 0, every_round, depth)
    assert torch.equal(inpaint(depth), expected) and (expected > 0).all()
