"""The randomized bin scene with the real kit-less engine (Newton + MuJoCo-Warp, Newton Warp depth renderer)."""

import math

import pytest
import torch

from dexrl.sim.bin_world import HEAP_MAX_SPEED, MAX_REDRAWS, BinWorld
from dexrl.sim.scene_cfg import SceneSettingsCfg
from primitive_pools import box, mixed_pool

pytestmark = pytest.mark.sim
NUM_ENVS = 3


@pytest.fixture(scope="module")
def world():
    settings = SceneSettingsCfg(num_envs=NUM_ENVS, device="cpu", seed=7)
    settings.objects.pool_size = 9
    settings.objects.count_range = (4, 7)
    pool = mixed_pool(8) + [box((0.04, 0.04, 0.04), "marker")]
    return BinWorld(settings, pool)


def test_objects_settle_inside_the_bin_and_above_the_floor(world):
    info = world.new_round()
    assert info.settled.all(), f"settle times {info.settle_time.tolist()}"
    assert (info.settle_time < world.settings.settle.timeout).all()
    pos = world.object_positions()[info.placed]
    x0, x1, y0, y1, floor, _ = world.interior_bounds.tolist()
    assert (pos[:, 0] > x0).all() and (pos[:, 0] < x1).all()
    assert (pos[:, 1] > y0).all() and (pos[:, 1] < y1).all()
    assert (pos[:, 2] > floor).all()
    counts = info.placed.sum(dim=1)
    assert ((counts >= 4) & (counts <= 7)).all()
    assert not world.overflow.envs().any()  # the seen set's buffer sizes hold these heaps


def _contact_shapes(world: BinWorld) -> set[int]:
    """The shapes in any of the world's current contacts."""
    contacts = world.sim.physics_manager._contacts
    count = int(contacts.rigid_contact_count.numpy()[0])
    return set(contacts.rigid_contact_shape0.numpy()[:count]) | set(contacts.rigid_contact_shape1.numpy()[:count])


def test_parked_objects_hang_still_at_their_spots_and_touch_nothing(world):
    info = world.new_round()
    heap_seen = world.render_depth().clone()
    # One placed object per env leaves the bin for its spot, as after a successful grasp.
    first_placed = info.placed.float().argmax(dim=1)
    world.park_objects(torch.arange(NUM_ENVS), first_placed)
    parked = ~world.round.placed
    assert parked[torch.arange(NUM_ENVS), first_placed].all()
    # The buffers and the renderer see the object gone at once, before any physics step: the grasp executor
    # renders, plans and starts the next attempt right after a judgement.
    spot = world.object_positions()[torch.arange(NUM_ENVS), first_placed]
    assert (spot[:, 2] < world.settings.bin.floor_z - 0.05).all()
    seen_at_once = world.render_depth().clone()
    world.step()

    def pixels_changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b).abs() > 2e-3).flatten(1).sum(dim=1)

    assert (pixels_changed(seen_at_once, heap_seen) > 500).all()  # the object is gone from the picture ...
    assert (pixels_changed(world.render_depth(), seen_at_once) <= 10).all()  # ... before the step, not by it
    start = world.object_positions().clone()
    world.step(round(0.5 / world.dt))
    moved = torch.linalg.norm(world.object_positions() - start, dim=-1)
    assert moved[parked].max() < 1e-4, "a parked object fell or drifted"
    shape_ids, envs, slots = world.pool_shapes
    touching = _contact_shapes(world)
    in_contact = torch.tensor([int(shape) in touching for shape in shape_ids])
    assert in_contact.any(), "the heaps must be in contact with the bin"
    assert not in_contact[parked[envs, slots]].any(), "a parked object makes contacts"


def test_a_disturbed_heap_is_waited_for_until_it_rests_and_keeps_its_round_record(world):
    info = world.new_round()
    record = world.round.settle_time.clone()
    slot = int(info.placed[1].float().argmax())
    poses = world.objects.data.body_link_pose_w.torch[[1]].clone()
    poses[0, slot, 2] += 0.05  # without support but still, as an object the fingers just let go of
    world._write_object_poses(torch.tensor([1]), poses)
    lifted_z = float(world.object_positions()[1, slot, 2])
    world.begin_rest(torch.arange(NUM_ENVS))
    assert world.coming_to_rest(torch.arange(NUM_ENVS)).all()
    rested, steps = {}, 0
    while len(rested) < NUM_ENVS and steps < 300:
        world.step()
        steps += 1
        rested.update((env, steps) for env in world.rested_rounds().tolist())
    assert set(rested) == set(range(NUM_ENVS))
    quiet_steps = world.settings.settle.quiet_time / world.dt - 1e-6
    assert min(rested.values()) >= quiet_steps  # every heap is watched for a quiet interval at least
    assert rested[1] >= 2 * quiet_steps  # the falling object moved in the first interval: watched again
    assert float(world.object_positions()[1, slot, 2]) < lifted_z - 0.03  # it fell back
    assert torch.equal(world.round.settle_time, record)  # the rounds' records stay those of their drops


def test_randomized_values_lie_in_range_and_differ_between_envs(world):
    info = world.new_round()
    rnd = world.settings.randomization
    placed = info.placed
    for values, (low, high) in (
        (info.mass, rnd.mass_range),
        (info.static_friction, rnd.static_friction_range),
        (info.dynamic_friction, (rnd.dynamic_friction_range[0], rnd.dynamic_friction_range[1])),
        (info.restitution, rnd.restitution_range),
    ):
        assert (values[placed] >= low).all() and (values[placed] <= high).all()
    assert (info.dynamic_friction <= info.static_friction).all()
    assert not torch.equal(info.mass[0], info.mass[1])
    assert not torch.equal(info.placed[0], info.placed[1]) or not torch.equal(info.mass[0], info.mass[2])
    # The simulator holds what was drawn.
    assert torch.allclose(world.objects.data.body_mass.torch, info.mass)


def test_a_redraw_waits_no_longer_than_its_timeout_and_leaves_the_other_envs(world):
    world.new_round()
    before = {name: value.clone() for name, value in vars(world.round).items()}
    window = world.settings.settle.quiet_time
    info = world.new_round(torch.tensor([1]), timeout=window)  # one window: the dropped heap is still falling
    assert not bool(info.settled[0]) and math.isclose(float(info.settle_time[0]), window, rel_tol=1e-5)
    for name, value in vars(world.round).items():
        assert torch.equal(value[[0, 2]], before[name][[0, 2]]), name


def _empty_bin(world: BinWorld):
    slot = torch.full((world.num_envs, 1), len(world.pool) - 1)
    far_corner = torch.tensor([0.17, 0.12, 0.03, 0, 0, 0, 1.0]).expand(world.num_envs, 1, 7)
    return world.place_objects(torch.arange(world.num_envs), slot, far_corner)


def test_empty_bin_floor_depth_matches_the_geometry_and_parked_objects_are_invisible(world):
    _empty_bin(world)  # one marker box in a corner, every other pool object parked under the table
    depth = world.render_depth(noise=False)
    mask = world.bin_mask(depth)
    expected_floor = world.settings.camera.height_above_floor
    k = world.settings.camera.intrinsics
    centre = depth[:, round(k.cy) - 20 : round(k.cy) + 20, round(k.cx) - 20 : round(k.cx) + 20]
    assert torch.allclose(centre, torch.full_like(centre, expected_floor), atol=0.002)
    # Nothing in view is lower than the table top or farther than the far clip: parked objects never show.
    table_depth = expected_floor + world.settings.bin.floor_z
    assert depth.max() <= table_depth + 0.002
    assert (depth > 0).all(), "the table must fill the whole view"
    # The mask covers the interior floor and excludes the walls' tops.
    assert mask[:, round(k.cy), round(k.cx)].all()
    wall_top_depth = expected_floor - world.settings.bin.wall_height
    assert not mask[depth < wall_top_depth + 0.003].any()


def test_the_bin_mask_is_the_interior_test_of_the_deprojected_point_cloud(world):
    world.new_round()
    depth = world.render_depth(noise=False)
    ids = torch.tensor([2, 0])  # a subset, out of order
    k = world.settings.camera.intrinsics
    local = world.extrinsics[ids].camera_to_world(k.deproject_image(depth[ids])) - world.env_origins[ids].view(
        -1, 1, 1, 3
    )
    x0, x1, y0, y1, z0, _ = world.interior_bounds.tolist()
    m = 0.008
    expected = (
        (local[..., 0] > x0 + m) & (local[..., 0] < x1 - m) & (local[..., 1] > y0 + m) & (local[..., 1] < y1 - m)
    ) & (local[..., 2] > z0 - 0.002) & (depth[ids] > 0)
    mask = world.bin_mask(depth[ids], ids)
    assert mask.shape == expected.shape and 0.2 < expected.float().mean() < 0.95  # a real interior, not all
    # the same test, its arithmetic in another order: at most a few pixels on an edge may round the other way
    assert (mask != expected).sum() <= 4
    assert torch.equal(world.bin_mask(depth)[ids], mask)


def test_a_known_point_projects_where_the_pinhole_model_says(world):
    _empty_bin(world)
    depth = world.render_depth(noise=False)
    k = world.settings.camera.intrinsics
    floor = world.settings.camera.height_above_floor
    marker = world.object_positions()[:, -1]  # where the 4 cm marker box settled, near (0.17, 0.12)
    centre_world = marker + torch.tensor([0.0, 0.0, 0.02]) + world.env_origins  # centre of its top face
    predicted = k.project(world.extrinsics.world_to_camera(centre_world.unsqueeze(1)).squeeze(1))
    # The marker's top face (20 px half-size): pixels at its depth in a +-24 px window that keeps the walls out.
    box_top = (depth - (floor - 0.04)).abs() < 0.005
    u, v = (int(c) for c in predicted[0].round())
    window = torch.zeros_like(box_top)
    window[:, v - 24 : v + 24, u - 24 : u + 24] = True
    box_top &= window
    rows, cols = torch.meshgrid(torch.arange(k.height), torch.arange(k.width), indexing="ij")
    area = box_top.sum(dim=(1, 2)).float()
    observed = torch.stack(((cols * box_top).sum((1, 2)) / area, (rows * box_top).sum((1, 2)) / area), dim=-1)
    assert torch.allclose(observed, predicted.float(), atol=0.75), (observed, predicted)  # centroid of a 40 px square
    # The top face is 4 cm wide: its area in pixels follows from the focal length.
    side_px = 0.04 * k.fx / (floor - 0.04)
    assert torch.allclose(area, torch.full_like(area, side_px**2), rtol=0.08)


def test_depth_noise_is_seeded_and_keeps_missing_pixels(world):
    from dexrl.sim.randomization import depth_noise

    depth = torch.full((2, 40, 50), 0.6)
    depth[:, :5] = 0.0
    cfg = world.settings.randomization
    a = depth_noise(depth, cfg, torch.Generator().manual_seed(3))
    b = depth_noise(depth, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a[:, :5] == 0).all()
    assert 0.0005 < (a[:, 5:] - 0.6).abs().mean() < 0.05
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("buffer", ["njmax", "nconmax"])
def test_heaps_that_overflow_the_physics_buffers_are_faults(buffer):
    # Two boxes at rest on the floor need dozens of constraint rows and 8 contacts per env. Past njmax MuJoCo-Warp
    # drops rows, past nconmax Newton drops contacts, and both only print; such a heap must not pass as physics.
    settings = SceneSettingsCfg(num_envs=2, device="cpu", seed=1)
    settings.objects.pool_size = 2
    settings.objects.count_range = (2, 2)
    setattr(settings.physics, buffer, 2)
    world = BinWorld(settings, [box((0.04, 0.04, 0.04), f"box{i}") for i in range(2)])
    assert world.steps_taken == 0 and not world.overflow.envs().any()
    with pytest.warns(RuntimeWarning, match="full physics buffers"):
        info = world.new_round(timeout=0.5)
    assert not info.settled.any()
    assert world.heap_faults >= 2 * MAX_REDRAWS  # every draw failed, in both envs
    assert world.overflow.overflowed_heaps >= 2 * MAX_REDRAWS
    assert world.faulty_envs(HEAP_MAX_SPEED).all()
    world.new_round(torch.tensor([1]), timeout=0.0)  # a fresh draw (still in the air) forgets its overflow
    # Rows are counted per env; contacts come from one pool, whose overflow marks every env.
    assert world.overflow.envs().tolist() == ([True, False] if buffer == "njmax" else [True, True])


def test_same_seed_repeats_the_draws():
    from dexrl.sim.randomization import draw_round, drop_poses

    settings = SceneSettingsCfg(num_envs=4)
    pool = [type("P", (), {"radius": 0.03})() for _ in range(24)]
    first = draw_round(settings, pool, 4, torch.Generator().manual_seed(11))
    second = draw_round(settings, pool, 4, torch.Generator().manual_seed(11))
    other = draw_round(settings, pool, 4, torch.Generator().manual_seed(12))
    for name in ("placed", "mass", "static_friction", "dynamic_friction", "restitution"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert not torch.equal(first.mass, other.mass)
    poses = drop_poses(settings, pool, first.placed, torch.Generator().manual_seed(1))
    quat_norm = poses[..., 3:].norm(dim=-1)
    assert torch.allclose(quat_norm, torch.ones_like(quat_norm), atol=1e-5)
    lowest = settings.bin.floor_z + settings.randomization.drop_height
    assert (poses[first.placed][:, 2] > lowest).all()
    assert not math.isclose(float(poses[0, 0, 0]), float(poses[1, 0, 0]))
