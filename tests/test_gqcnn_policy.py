"""The FC-GQ-CNN planner: mask, ordering, filters, fast paths, q-maps, typed errors."""

import math

import pytest
import torch

from dexrl.gqcnn import load_planner
from dexrl.gqcnn.grid import STRIDE, bin_to_angle, cell_of_pixel, grid_mask
from dexrl.gqcnn.model import GQCNN, save_network
from dexrl.gqcnn.policy import FCGQCNNPlanner, PlannerOptions
from dexrl.grasp import CameraIntrinsics, NoValidGrasps, Planner, PlannerInputError, deproject_per_camera

HEIGHT, WIDTH = 150, 180
CAMERA = CameraIntrinsics(fx=552.5, fy=552.5, cx=89.5, cy=74.5, width=WIDTH, height=HEIGHT)


def _scene(batch: int = 1, seed: int = 0):
    """Depth (B, H, W) [m]: bin floor 0.7 m inside walls 0.55 m high and 30 px thick, two boxes; a missing
    patch.
    Mask: the bin interior."""
    generator = torch.Generator().manual_seed(seed)
    depth = torch.full((batch, HEIGHT, WIDTH), 0.55)
    depth[:, 30:-30, 30:-30] = 0.70
    depth[:, 50:80, 60:95] = 0.64
    depth[:, 85:105, 100:140] = 0.66
    depth = depth + 0.001 * torch.randn(depth.shape, generator=generator)
    depth[:, 40:44, 40:46] = 0.0
    mask = torch.zeros(batch, HEIGHT, WIDTH, dtype=torch.bool)
    mask[:, 30:-30, 30:-30] = True
    return depth, mask


def _planner(network, **options) -> FCGQCNNPlanner:
    return FCGQCNNPlanner(network, "cpu", PlannerOptions(**{"depth_bins": 4, **options}))


def test_the_planner_implements_the_protocol(network):
    assert isinstance(_planner(network), Planner)


def test_grasps_lie_inside_the_mask_and_are_sorted_by_q(network):
    depth, _ = _scene()
    mask = torch.zeros_like(depth, dtype=torch.bool)
    mask[:, 45:110, 55:150] = True
    result = _planner(network).plan(depth, CAMERA, mask, k=25)
    g = result.grasps
    assert result.valid.all()
    u, v = g.center[0, :, 0].long(), g.center[0, :, 1].long()
    assert mask[0, v, u].all()
    assert (g.q[0, 1:] <= g.q[0, :-1]).all() and g.q[0, 0] > g.q[0, -1]
    assert ((g.center - 48) % STRIDE == 0).all()
    angle_bins = bin_to_angle(torch.arange(16), 16)
    assert all(torch.isclose(angle_bins, a).any() for a in g.angle[0])
    assert ((g.depth >= 0.63) & (g.depth <= 0.71)).all() and torch.allclose(g.width, torch.tensor(0.05))
    torch.testing.assert_close(result.positions_cam, deproject_per_camera([CAMERA], g.center, g.depth))


def test_fast_paths_equal_the_plain_planner(network):
    depth, mask = _scene(seed=1)
    plain = _planner(network, crop_to_mask=False, share_first_conv=False).plan(
        depth, CAMERA, mask, k=10, return_q_map=True
    )
    fast = _planner(network).plan(depth, CAMERA, mask, k=10, return_q_map=True)
    assert torch.equal(fast.grasps.center, plain.grasps.center)
    assert torch.equal(fast.grasps.angle, plain.grasps.angle) and torch.equal(
        fast.grasps.depth, plain.grasps.depth
    )
    torch.testing.assert_close(fast.grasps.q, plain.grasps.q, rtol=0, atol=1e-5)
    cells = grid_mask(mask)[:, None].expand_as(plain.q_map)
    torch.testing.assert_close(fast.q_map[cells], plain.q_map[cells], rtol=0, atol=1e-5)


def test_a_batch_plans_each_image_as_if_alone(network):
    depth, mask = _scene(batch=2, seed=2)
    mask[1, :, 100:] = False  # different masks: the batch shares one bounding box
    planner = _planner(network)
    both = planner.plan(depth, CAMERA, mask, k=5)
    for image in range(2):
        alone = planner.plan(depth[image : image + 1], CAMERA, mask[image : image + 1], k=5)
        assert torch.equal(both.grasps.center[image], alone.grasps.center[0])
        torch.testing.assert_close(both.grasps.q[image], alone.grasps.q[0], rtol=0, atol=1e-5)


def test_q_map_holds_each_angles_best_over_depths(network):
    depth, mask = _scene()
    result = _planner(network).plan(depth, CAMERA, mask, k=1, return_q_map=True)
    q_map = result.q_map
    assert q_map.shape == (1, 16, 15, 22)
    assert ((q_map >= 0) & (q_map <= 1)).all()
    best = result.best
    row, col = cell_of_pixel(best.center[0, 0], best.center[0, 1])
    assert torch.isclose(q_map[0, :, row, col].max(), best.q[0])
    assert torch.isclose(q_map[0][grid_mask(mask)[0].expand(16, -1, -1)].max(), best.q[0])
    assert _planner(network).plan(depth, CAMERA, mask).q_map is None


def test_minimum_distance_between_returned_grasps(network):
    depth, mask = _scene()
    result = _planner(network, min_distance_px=25.0).plan(depth, CAMERA, mask, k=6)
    centers = result.grasps.center[0][result.valid[0]]
    distances = torch.cdist(centers, centers) + torch.eye(len(centers)) * 1e3
    assert len(centers) == 6 and distances.min() >= 25.0
    assert (result.grasps.q[0, 1:] <= result.grasps.q[0, :-1]).all()
    crowded = _planner(network).plan(depth, CAMERA, mask, k=6).grasps.center[0]
    assert (torch.cdist(crowded, crowded) + torch.eye(6) * 1e3).min() < 25.0


def _jaw_tips(grasps, image: int = 0):
    half = 0.5 * grasps.width[image] * CAMERA.fx / grasps.depth[image]
    axis = torch.stack((torch.cos(grasps.angle[image]), torch.sin(grasps.angle[image])), -1) * half[:, None]
    return [torch.round(grasps.center[image] + sign * axis).long() for sign in (-1, 1)]


def test_jaws_inside_the_mask(network):
    depth, mask = _scene()
    narrow = torch.zeros_like(mask)
    narrow[:, 40:115, 70:110] = True  # 40 px wide: about the jaw opening
    loose = _planner(network).plan(depth, CAMERA, narrow, k=30)
    assert not all(narrow[0, tip[:, 1], tip[:, 0]].all() for tip in _jaw_tips(loose.grasps))
    strict = _planner(network, jaws_inside_mask=True).plan(depth, CAMERA, narrow, k=30)
    for tip in _jaw_tips(strict.grasps):
        assert narrow[0, tip[:, 1], tip[:, 0]].all()


def _clear_of_walls(depth, result, clearance: float) -> torch.Tensor:
    """Per grasp: both jaw tips inside the image and seeing depth at least ``clearance`` beyond the grasp
    depth."""
    clear = torch.ones(result.grasps.q.shape[1], dtype=torch.bool)
    for tip in _jaw_tips(result.grasps):
        inside = (tip[:, 0] >= 0) & (tip[:, 0] < WIDTH) & (tip[:, 1] >= 0) & (tip[:, 1] < HEIGHT)
        seen = depth[0, tip[:, 1].clamp(0, HEIGHT - 1), tip[:, 0].clamp(0, WIDTH - 1)]
        clear &= inside & (seen >= result.grasps.depth[0] + clearance)
    return clear


def test_jaws_clear_the_bin_walls(network):
    depth, mask = _scene()
    loose = _planner(network).plan(depth, CAMERA, mask, k=40)
    assert not _clear_of_walls(depth, loose, 0.005).all()
    strict = _planner(network, jaw_clearance=0.005).plan(depth, CAMERA, mask, k=40)
    assert strict.valid.all()
    assert _clear_of_walls(depth, strict, 0.005).all()


def test_fewer_grasps_than_k_are_marked_invalid(network):
    depth, _ = _scene()
    mask = torch.zeros_like(depth, dtype=torch.bool)
    mask[0, 52, 52] = mask[0, 52, 56] = True  # exactly two cell centres
    result = _planner(network, depth_bins=1).plan(depth, CAMERA, mask, k=40)
    assert result.valid[0, :32].all() and not result.valid[0, 32:].any()
    assert not result.grasps.q[0, 32:].any() and not result.positions_cam[0, 32:].any()
    assert set(map(tuple, result.grasps.center[0, :32].tolist())) == {(52.0, 52.0), (56.0, 52.0)}


def test_per_image_cameras_are_used_for_the_positions(network):
    depth, mask = _scene(batch=2)
    other = CameraIntrinsics(fx=400.0, fy=410.0, cx=80.0, cy=70.0, width=WIDTH, height=HEIGHT)
    result = _planner(network).plan(depth, [CAMERA, other], mask, k=2)
    expected = deproject_per_camera([CAMERA, other], result.grasps.center, result.grasps.depth)
    torch.testing.assert_close(result.positions_cam, expected)
    assert not torch.allclose(result.positions_cam[0], result.positions_cam[1])


@pytest.mark.parametrize(
    "make_input, error, message",
    [
        (lambda d, m: (torch.zeros_like(d), m), PlannerInputError, "no valid depth"),
        (
            lambda d, m: (
                d.index_put(
                    (torch.tensor([0]), torch.tensor([70]), torch.tensor([80])), torch.tensor(math.nan)
                ),
                m,
            ),
            PlannerInputError,
            "NaN",
        ),
        (lambda d, m: (d[0], m[0]), PlannerInputError, "(B, H, W)"),
        (lambda d, m: (d.double().int(), m), PlannerInputError, "floating point"),
        (lambda d, m: (d, m.float()), PlannerInputError, "mask"),
        (lambda d, m: (d, torch.zeros_like(m)), NoValidGrasps, "mask"),
        (
            lambda d, m: (d, torch.zeros_like(m).index_fill(2, torch.arange(5), True)),
            NoValidGrasps,
            "inside the image",
        ),
    ],
)
def test_bad_input_raises_a_typed_error(network, make_input, error, message):
    depth, mask = _scene()
    depth, mask = make_input(depth, mask)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        _planner(network).plan(depth, CAMERA, mask)


def test_small_images_wrong_cameras_and_k_raise_typed_errors(network):
    depth, mask = _scene()
    planner = _planner(network)
    small = CameraIntrinsics(fx=500.0, fy=500.0, cx=40.0, cy=40.0, width=90, height=80)
    with pytest.raises(PlannerInputError, match="at least 96x96"):
        planner.plan(depth[:, :80, :90], small)
    with pytest.raises(PlannerInputError, match="intrinsics"):
        planner.plan(depth, small, mask)
    with pytest.raises(PlannerInputError, match="k must be"):
        planner.plan(depth, CAMERA, mask, k=0)
    walls_only = torch.zeros_like(mask)
    walls_only[:, 48:100, 48:60] = True
    with pytest.raises(NoValidGrasps, match="filters"):
        _planner(network, jaw_clearance=0.5).plan(depth, CAMERA, walls_only)


def test_load_planner_reads_weights_files_and_explains_missing_ones(tmp_path, network):
    with pytest.raises(FileNotFoundError, match="import-weights"):
        load_planner(tmp_path / "absent.safetensors")
    save_network(network, tmp_path / "fc.safetensors", {"source": "test"})
    planner = load_planner(tmp_path / "fc.safetensors", options=PlannerOptions(depth_bins=2))
    assert planner.card.provenance == {"source": "test"}
    depth, mask = _scene()
    assert planner.plan(depth, CAMERA, mask).valid.all()
    torch.manual_seed(1)
    save_network(GQCNN(), tmp_path / "crop.safetensors", {})
    crop_planner = load_planner(tmp_path / "crop.safetensors", options=PlannerOptions(depth_bins=2))
    result = crop_planner.plan(depth, CAMERA, mask, k=3, return_q_map=True)
    assert result.q_map.shape[1] == 1 and not result.grasps.angle.any()  # one bin: horizontal jaws
