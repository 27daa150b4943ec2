"""The grasp executor with the real kit-less engine: outcomes, no cross-talk, poses, faults."""

import math

import pytest
import torch
import warp as wp
from mujoco_warp import OverflowType

from dexrl.grasp import GraspPoses, ImageGrasps, image_to_world
from dexrl.sim.bin_world import BinWorld
from dexrl.sim.executor import ExecutorCfg, GraspExecutor, Outcome
from dexrl.sim.mounts import embodiment_entities
from dexrl.sim.gripper import GripperCfg
from dexrl.sim.scene_cfg import SceneSettingsCfg
from primitive_pools import box

pytestmark = pytest.mark.sim
NUM_ENVS = 4
BOX = (0.03, 0.07, 0.04)  # [m] narrow side 3 cm (graspable), wide side 7 cm (wider than the 5 cm opening)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    settings = SceneSettingsCfg(num_envs=NUM_ENVS, device="cpu", seed=3)
    settings.objects.pool_size = 1
    settings.objects.count_range = (1, 1)
    gripper = GripperCfg()
    world = BinWorld(settings, [box(BOX)], extras=embodiment_entities("gantry", gripper, tmp_path_factory.mktemp("gripper")))
    executor = GraspExecutor(world, gripper, ExecutorCfg(attempts_per_heap=1000))
    return world, executor


def _box_in_the_middle(world: BinWorld):
    pose = torch.tensor([0.0, 0.0, world.settings.bin.floor_z + BOX[2] / 2, 0, 0, 0, 1.0])
    world.place_objects(torch.arange(world.num_envs), torch.zeros(world.num_envs, 1, dtype=torch.long), pose.expand(world.num_envs, 1, 7))


NARROW = (0.0, 0.0, 0.0)  # (x, y, jaw yaw): across the 3 cm side (the jaw axis along x)
BESIDE = (0.0, 0.08, 0.0)  # 5 cm clear of the box's side
WIDE = (0.0, 0.0, math.pi / 2)  # across the 7 cm side
WALL = (0.2075, 0.0, 0.0)  # onto the +x wall


def _grasps(world: BinWorld, plan) -> GraspPoses:
    z = world.settings.bin.floor_z + BOX[2] / 2
    position = torch.tensor([[x, y, z] for x, y, _ in plan]) + world.env_origins
    yaw = torch.tensor([a for _, _, a in plan])
    return GraspPoses(position=position, yaw=yaw, width=torch.full((len(plan),), 0.05))


def test_each_env_gets_the_outcome_of_its_own_grasp(rig):
    world, executor = rig
    for plan in ([NARROW, BESIDE, WIDE, WALL], [WALL, WIDE, BESIDE, NARROW]):
        _box_in_the_middle(world)
        redrawn = executor.redrawn_heaps
        result = executor.execute(_grasps(world, plan))
        outcomes = [Outcome(int(o)) for o in result.outcome]
        expected = {NARROW: Outcome.SUCCESS, BESIDE: Outcome.EMPTY, WALL: Outcome.COLLISION}
        for grasp, outcome in zip(plan, outcomes):
            if grasp == WIDE:
                assert outcome != Outcome.SUCCESS, "a 7 cm side does not fit a 5 cm opening"
            else:
                assert outcome == expected[grasp], (plan, outcomes)
        success_env = plan.index(NARROW)
        assert int(result.grasped[success_env]) == 0
        assert (result.grasped[[i for i in range(NUM_ENVS) if i != success_env]] == -1).all()
        # The grasped object left the bin, which was then empty and re-drawn; the other heaps stayed.
        others = [i for i in range(NUM_ENVS) if i != success_env]
        assert int(executor.attempts_on_heap[success_env]) == 0
        assert (executor.attempts_on_heap[others] > 0).all()
        assert world.round.placed.all()
        assert executor.redrawn_heaps == redrawn + 1
        assert not world.coming_to_rest(torch.arange(NUM_ENVS)).any()  # the next batch sees heaps at rest
        # The jaw that closed on nothing was judged when it shut, without the lift and the hold.
        empty_env = plan.index(BESIDE)
        assert result.duration[empty_env] < result.duration[success_env] - executor.cfg.hold_time


def _stream_until_judged(world: BinWorld, executor: GraspExecutor, envs: set[int], started=None) -> list:
    """Step a streaming executor until the attempts of ``envs`` are judged; ``started(env)`` may start new
    attempts as others end. Returns (env, outcome) in the order they were judged."""
    judged = []
    while not envs <= {env for env, _ in judged}:
        world.step()
        done = executor.finished().nonzero().flatten()
        if len(done):
            result = executor.conclude(done)
            for env, outcome in zip(done.tolist(), result.outcome.tolist()):
                judged.append((env, Outcome(outcome)))
                if started is not None:
                    started(env)
    return judged


def test_streamed_attempts_are_judged_as_they_end_and_restarts_leave_the_others_alone(rig):
    world, executor = rig
    _box_in_the_middle(world)
    restarted = []

    def restart_after_the_collision(env: int) -> None:
        if env == 3 and not restarted:  # env 3 hit the wall; env 0 is still closing on or lifting its box
            restarted.append(env)
            narrow = _grasps(world, [NARROW] * NUM_ENVS)
            executor.start(GraspPoses(narrow.position[3:], narrow.yaw[3:], narrow.width[3:]), torch.tensor([3]))

    with executor.streaming():
        executor.start(_grasps(world, [NARROW, BESIDE, WIDE, WALL]))
        judged = _stream_until_judged(world, executor, {0, 1, 2, 3}, restart_after_the_collision)
        judged += _stream_until_judged(world, executor, {3})
    order = [env for env, _ in judged]
    outcomes = dict(judged[:4])
    assert outcomes[0] == Outcome.SUCCESS and outcomes[1] == Outcome.EMPTY and outcomes[3] == Outcome.COLLISION
    assert outcomes[2] != Outcome.SUCCESS
    assert order.index(3) < order.index(1) < order.index(0)  # each judged when it ended: no lock-step
    assert judged[-1] == (3, Outcome.SUCCESS)  # the attempt started mid-stream lifted env 3's box
    assert not world.pre_step_callbacks  # the stream's state machine is off the world's steps again


def test_a_heap_redrawn_in_a_stream_comes_to_rest_while_the_other_attempts_go_on(rig, monkeypatch):
    world, executor = rig
    _box_in_the_middle(world)
    monkeypatch.setattr(executor.cfg, "attempts_per_heap", 1)  # every judged attempt re-draws its heap
    monkeypatch.setattr(world, "new_round", lambda *args, **kwargs: pytest.fail("a stream must not settle in place"))
    settled_before = executor.redrawn_settled
    judged, rested, steps = {}, [], 0
    with executor.streaming():
        executor.start(_grasps(world, [WALL, NARROW, BESIDE, NARROW]))
        while len(judged) < NUM_ENVS:
            world.step()
            steps += 1
            newly_rested = world.rested_rounds()
            executor.heaps_rested(newly_rested)
            rested += [(env, steps) for env in newly_rested.tolist()]
            done = executor.finished().nonzero().flatten()
            if len(done):
                result = executor.conclude(done)
                for env, outcome in zip(done.tolist(), result.outcome.tolist()):
                    judged[env] = (Outcome(outcome), steps)
                assert world.coming_to_rest(done).all()  # re-drawn, falling into the bin, no settle in place
                if 0 in done.tolist():
                    assert 1 not in judged and not executor.finished()[1]  # env 1's attempt goes on
        assert judged[0][0] == Outcome.COLLISION and judged[2][0] == Outcome.EMPTY
        assert judged[1][0] == Outcome.SUCCESS == judged[3][0]  # lifted while env 0's new heap fell in
        assert 0 in dict(rested) and dict(rested)[0] < judged[1][1]  # env 0's heap rested before env 1 was judged
    # Leaving the stream waited for the heaps still falling; all four came to rest in their bins.
    assert not world.coming_to_rest(torch.arange(NUM_ENVS)).any() and not world.pre_step_callbacks
    assert world.round.settled.all() and world.round.placed.any(dim=1).all()
    assert executor.redrawn_settled == settled_before + NUM_ENVS


def test_the_executor_drives_to_the_deprojected_image_grasp(rig):
    world, executor = rig
    _box_in_the_middle(world)
    k = world.settings.camera.intrinsics
    # An empty spot of the bin floor: the gripper reaches the commanded depth without touching anything.
    grasps = ImageGrasps(
        center=torch.tensor([[130.0, 200.0]] * NUM_ENVS),  # 12 cm left of the box, clear of the walls
        angle=torch.tensor([0.3, -0.7, 1.2, -1.5]),
        depth=torch.full((NUM_ENVS,), world.settings.camera.height_above_floor - 0.03),
        width=torch.full((NUM_ENVS,), 0.05),
        q=torch.ones(NUM_ENVS),
    )
    poses = image_to_world(grasps, k, world.extrinsics)
    result = executor.execute(poses)
    assert (result.outcome == Outcome.EMPTY).all()
    error = torch.linalg.norm(result.reached.position - (poses.position - world.env_origins), dim=-1)
    assert (error < 0.001).all(), error
    yaw_error = torch.remainder(result.reached.yaw - poses.yaw + math.pi / 2, math.pi) - math.pi / 2
    assert (yaw_error.abs() < math.radians(1.0)).all(), yaw_error


def test_unreachable_pose_is_invalid(rig):
    world, executor = rig
    _box_in_the_middle(world)
    poses = _grasps(world, [NARROW] * NUM_ENVS)
    poses.position[1, 2] = -0.2  # below the bin floor
    poses.position[2, 0] += 5.0  # beyond the gantry's travel
    poses.position[3, 1] = float("nan")
    result = executor.execute(poses)
    assert [Outcome(int(o)) for o in result.outcome[1:]] == [Outcome.INVALID] * 3
    assert Outcome(int(result.outcome[0])) == Outcome.SUCCESS


def test_a_non_finite_state_resets_only_that_env(rig):
    world, executor = rig
    _box_in_the_middle(world)
    poses = world.objects.data.body_link_pose_w.torch.clone()
    poses[2, 0, :3] = float("nan")
    world.objects.write_body_pose_to_sim_index(body_poses=poses[2:3], env_ids=torch.tensor([2]))
    before = executor.fault_count
    result = executor.execute(_grasps(world, [NARROW] * NUM_ENVS))
    outcomes = [Outcome(int(o)) for o in result.outcome]
    assert outcomes[2] == Outcome.FAULT
    assert outcomes[0] == outcomes[1] == outcomes[3] == Outcome.SUCCESS
    assert executor.fault_count == before + 1
    assert torch.isfinite(world.object_positions()).all()  # env 2 was re-drawn
    assert world.round.placed[2].all()
    # The faulted heap and the three emptied bins were re-drawn together, and each came to rest.
    assert world.round.settled.all()


def test_an_env_whose_physics_dropped_constraint_rows_faults_alone(rig):
    # MuJoCo-Warp marks a world whose constraint rows overflowed njmax (the rows past it are dropped); its
    # attempt must be a fault, not a label, and its heap is drawn again.
    world, executor = rig
    _box_in_the_middle(world)
    marks = wp.to_torch(world.sim.physics_manager._solver.mjw_data.overflow)
    marks[3] |= int(OverflowType.NEFC)
    before = executor.fault_count
    with pytest.warns(RuntimeWarning, match="full physics buffers"):
        result = executor.execute(_grasps(world, [NARROW] * NUM_ENVS))
    outcomes = [Outcome(int(o)) for o in result.outcome]
    assert outcomes == [Outcome.SUCCESS] * 3 + [Outcome.FAULT]
    assert executor.fault_count == before + 1 and world.overflow.overflowed_heaps == 1
    assert not world.overflow.envs().any() and world.round.placed[3].all()


def test_a_gripper_spoiled_by_a_blown_up_heap_is_reset_for_the_redraw(rig):
    # A heap that blows up while settling takes its env's gripper along (non-finite joints); every redraw of
    # that env then blew up again until the next attempt teleported the gripper.
    world, executor = rig
    _box_in_the_middle(world)
    robot = executor.robot
    q = robot.data.joint_pos.torch.clone()
    q[1] = float("nan")
    all_envs = torch.arange(NUM_ENVS)
    robot.write_joint_state_to_sim_index(position=q, velocity=torch.zeros_like(q), env_ids=all_envs)
    info = world.new_round(torch.tensor([1]))
    assert bool(info.settled.all()), info.settle_time
    assert torch.isfinite(world.object_positions()).all()
    assert torch.isfinite(robot.data.joint_pos.torch).all()
    assert torch.allclose(robot.data.joint_pos.torch[1], executor.home[1], atol=0.002)
