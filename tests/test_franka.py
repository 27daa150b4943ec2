"""The Franka embodiment: the arm's USD and kinematics, batched IK over the bin, and grasps in the real kit-less
engine next to the gantry's outcomes."""

import itertools
import math

import pytest
import torch

from dexrl.grasp import GraspPoses
from dexrl.sim.bin_world import BinWorld
from dexrl.sim.executor import ExecutorCfg, GraspExecutor, Outcome
from dexrl.sim.franka import ARM_JOINTS, ARM_USD, FrankaCfg, write_franka_usd
from dexrl.sim.gripper import GripperCfg
from dexrl.sim.kinematics import quat_of, transform
from dexrl.sim.mounts import FrankaMount, embodiment_entities
from dexrl.sim.scene_cfg import SceneSettingsCfg
from primitive_pools import box

SETTINGS = SceneSettingsCfg()
FLOOR_Z = SETTINGS.bin.floor_z
WALL_TOP = FLOOR_Z + SETTINGS.bin.wall_height
HALF_X, HALF_Y = (s / 2 for s in SETTINGS.bin.interior_size)
POSITION_TOLERANCE, ANGLE_TOLERANCE = 0.002, math.radians(2.0)


@pytest.fixture(scope="module")
def franka_usd(tmp_path_factory):
    return write_franka_usd(GripperCfg(), tmp_path_factory.mktemp("franka"))


@pytest.fixture(scope="module")
def mount(franka_usd):
    franka = FrankaCfg()
    home = torch.tensor([[*franka.home, 0.025, 0.025]])
    return FrankaMount(GripperCfg(), franka, franka_usd, franka.base_position, home)


def _bin_poses():
    """Top-down TCP poses over the bin interior: centre, corners and edges (2 cm inside the walls), from just
    above the floor to above the walls, jaw yaw over +-90 degrees."""
    xs = (-HALF_X + 0.02, 0.0, HALF_X - 0.02)
    ys = (-HALF_Y + 0.02, 0.0, HALF_Y - 0.02)
    zs = (FLOOR_Z + 0.01, FLOOR_Z + 0.06, WALL_TOP + 0.05, WALL_TOP + 0.15)
    yaws = torch.linspace(-math.pi / 2, math.pi / 2, 5).tolist()
    grid = torch.tensor(list(itertools.product(xs, ys, zs, yaws)))
    return grid[:, :3], grid[:, 3]


def test_the_chain_read_from_usd_places_every_link_where_the_arm_file_does(franka_usd):
    from pxr import Usd, UsdGeom

    from dexrl.sim.kinematics import SerialChain

    chain = SerialChain.from_usd(franka_usd, list(ARM_JOINTS))
    frames, _ = chain.forward(torch.zeros(1, 7, dtype=torch.float64))
    stage = Usd.Stage.Open(str(ARM_USD))
    for index in range(1, 8):
        matrix = UsdGeom.Xformable(stage.GetPrimAtPath(f"/Franka/link{index}")).ComputeLocalToWorldTransform(0)
        authored = torch.tensor([[matrix[r][c] for r in range(4)] for c in range(4)], dtype=torch.float64)  # row-vector
        assert torch.allclose(frames[0, index - 1], authored, atol=1e-6), f"link{index}"


def test_quaternions_round_trip_through_rotation_matrices():
    torch.manual_seed(0)
    for quat in [(1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), *torch.nn.functional.normalize(torch.randn(20, 4), dim=-1).tolist()]:
        rotation = transform((0, 0, 0), quat)[:3, :3]
        assert torch.allclose(transform((0, 0, 0), quat_of(rotation))[:3, :3], rotation, atol=1e-6)


def test_ik_reaches_top_down_poses_over_the_whole_bin_interior(mount):
    position, yaw = _bin_poses()
    joints = mount.solve(position, yaw)
    tcp, tcp_yaw = mount.tcp_pose(torch.cat((joints, torch.zeros(len(yaw), 2)), dim=-1))
    assert (torch.linalg.norm(tcp - position, dim=-1) <= POSITION_TOLERANCE).all()
    # The jaw is symmetric: yaw and yaw + pi grip alike.
    yaw_error = torch.remainder(tcp_yaw - yaw + math.pi / 2, math.pi) - math.pi / 2
    assert (yaw_error.abs() <= ANGLE_TOLERANCE).all()
    _, tool = mount.chain.forward(joints)
    assert (tool[:, 2, 2] >= math.cos(ANGLE_TOLERANCE)).all(), "the fingers hang vertically"
    assert (joints >= mount.chain.lower - 1e-6).all() and (joints <= mount.chain.upper + 1e-6).all()
    assert mount.reachable(position, yaw).all()


def test_poses_beyond_the_arm_are_unreachable(mount):
    position = torch.tensor([[1.2, 0.0, 0.05], [0.0, 0.0, 1.6], [-0.52, 0.0, 0.05], [0.0, 0.0, 0.05]])
    reachable = mount.reachable(position, torch.zeros(4))
    assert reachable.tolist() == [False, False, False, True]


def test_the_home_pose_is_out_of_the_cameras_view(franka_usd, mount):
    """Every collision vertex of the arm and hand at home lies behind the near plane or outside the widest ray
    of the image (its half diagonal), with the camera looking straight down at the bin centre."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(franka_usd))
    links = [f"link{i}" for i in range(8)]
    home = mount.home[:, :7].double()
    frames, _ = mount.chain.to("cpu", torch.float64).forward(home)
    base = torch.tensor(FrankaCfg().base_position, dtype=torch.float64)
    link_frames = [torch.eye(4, dtype=torch.float64)] + list(frames[0])
    points = []
    for name, frame in zip(links, link_frames):
        mesh = UsdGeom.Mesh(stage.GetPrimAtPath(f"/Franka/{name}/collision"))
        local = torch.tensor([list(p) for p in mesh.GetPointsAttr().Get()], dtype=torch.float64)
        to_link = UsdGeom.Xformable(mesh).GetLocalTransformation()
        to_link = torch.tensor([[to_link[r][c] for r in range(4)] for c in range(4)], dtype=torch.float64)
        homogeneous = torch.cat((local, torch.ones(len(local), 1, dtype=torch.float64)), dim=-1)
        points.append((frame @ to_link @ homogeneous.T).T[:, :3] + base)
    points = torch.cat(points)
    camera = SETTINGS.camera
    depth = FLOOR_Z + camera.height_above_floor - points[:, 2]
    k = camera.intrinsics
    widest = math.hypot(k.width / 2, k.height / 2) / k.fx
    radial = torch.linalg.norm(points[:, :2], dim=-1)
    assert ((depth < camera.near) | (radial > widest * depth)).all()
    # The TCP at home is also out of view (above the camera).
    tcp = mount.tcp_pose(mount.home)[0][0]
    assert tcp[2] > FLOOR_Z + camera.height_above_floor or torch.linalg.norm(tcp[:2]) > widest * (FLOOR_Z + camera.height_above_floor - tcp[2])


# ---------------------------------------------------------------------------------------------- in the engine
BOX = (0.03, 0.07, 0.04)  # [m] as the gantry's executor test: 3 cm graspable side, 7 cm too wide
NARROW, BESIDE, WIDE, WALL = (0.0, 0.0, 0.0), (0.0, 0.08, 0.0), (0.0, 0.0, math.pi / 2), (0.2075, 0.0, 0.0)
FAR = (0.75, 0.0, 0.0)  # beyond the arm's reach from its base at x = -0.52


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    settings = SceneSettingsCfg(num_envs=4, device="cpu", seed=3, embodiment="franka")
    settings.objects.pool_size = 1
    settings.objects.count_range = (1, 1)
    gripper = GripperCfg()
    extras = embodiment_entities("franka", gripper, tmp_path_factory.mktemp("franka_sim"), settings.franka)
    world = BinWorld(settings, [box(BOX)], extras=extras)
    return world, GraspExecutor(world, gripper, ExecutorCfg(attempts_per_heap=1000))


def _box_in_the_middle(world: BinWorld):
    pose = torch.tensor([0.0, 0.0, FLOOR_Z + BOX[2] / 2, 0, 0, 0, 1.0])
    world.place_objects(torch.arange(world.num_envs), torch.zeros(world.num_envs, 1, dtype=torch.long), pose.expand(world.num_envs, 1, 7))


def _grasps(world: BinWorld, plan) -> GraspPoses:
    position = torch.tensor([[x, y, FLOOR_Z + BOX[2] / 2] for x, y, _ in plan]) + world.env_origins
    return GraspPoses(position=position, yaw=torch.tensor([a for *_, a in plan]), width=torch.full((len(plan),), 0.05))


@pytest.mark.sim
def test_the_arm_carries_the_tcp_to_ik_targets_within_2_mm_and_2_degrees(rig):
    world, executor = rig
    mount, robot = executor.mount, executor.robot
    position = torch.tensor([[0.0, 0.0, FLOOR_Z + 0.03], [-HALF_X + 0.02, -HALF_Y + 0.02, WALL_TOP + 0.06],
                             [HALF_X - 0.02, HALF_Y - 0.02, WALL_TOP + 0.06], [HALF_X - 0.02, -HALF_Y + 0.02, WALL_TOP + 0.15]])
    yaw = torch.tensor([0.0, math.pi / 2, -math.pi / 2, 0.8])
    start = position + torch.tensor([0.0, 0.0, 0.1])
    target = executor.home.clone()
    target[:, :7] = mount.solve(start, yaw)
    executor._teleport(target)
    for step in range(150):  # 10 cm down at 1 mm per step, then 0.5 s to settle
        setpoint = torch.maximum(position, start - torch.tensor([0.0, 0.0, 0.001 * step]))
        target[:, :7] = mount.track(target[:, :7], setpoint, yaw)
        robot.actuators.target_command.set_position_index(value=target)
        world.step()
    palm = robot.find_bodies("palm")[0][0]
    palm_position = robot.data.body_pos_w.torch[:, palm] - world.env_origins
    palm_rotation = _rotation_of(robot.data.body_quat_w.torch[:, palm])
    tcp = palm_position - palm_rotation[:, :, 2] * executor.gripper.tcp_below_base()
    assert (torch.linalg.norm(tcp - position, dim=-1) <= POSITION_TOLERANCE).all(), tcp - position
    upright = torch.arccos(palm_rotation[:, 2, 2].clamp(max=1.0))
    assert (upright <= ANGLE_TOLERANCE).all()
    jaw_yaw = torch.atan2(palm_rotation[:, 1, 0], palm_rotation[:, 0, 0])
    yaw_error = torch.remainder(jaw_yaw - yaw + math.pi / 2, math.pi) - math.pi / 2
    assert (yaw_error.abs() <= ANGLE_TOLERANCE).all()


def _rotation_of(quat_xyzw: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations of Isaac Lab 3's (x, y, z, w) quaternions."""
    x, y, z, w = quat_xyzw.unbind(-1)
    return torch.stack((
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ), dim=-1).reshape(*quat_xyzw.shape[:-1], 3, 3)


@pytest.mark.sim
def test_the_franka_lifts_the_box_that_the_gantry_lifts_and_misses_where_it_misses(rig):
    world, executor = rig
    plan = [NARROW, BESIDE, WIDE, WALL]
    _box_in_the_middle(world)
    result = executor.execute(_grasps(world, plan))
    outcomes = [Outcome(int(o)) for o in result.outcome]
    # The gantry's outcomes for the same grasps (tests/test_executor_sim.py).
    assert outcomes[0] == Outcome.SUCCESS and int(result.grasped[0]) == 0, outcomes
    assert outcomes[1] == Outcome.EMPTY, outcomes
    assert outcomes[2] != Outcome.SUCCESS, outcomes
    assert outcomes[3] == Outcome.COLLISION, outcomes
    # Where the fingers started to close: the commanded grasp, within the IK's tolerances.
    for env in (0, 1):
        assert torch.linalg.norm(result.reached.position[env] - result.commanded.position[env]) <= POSITION_TOLERANCE
        assert abs(float(result.reached.yaw[env] - result.commanded.yaw[env])) <= ANGLE_TOLERANCE
    # Back home after the attempt.
    assert torch.allclose(executor.robot.data.joint_pos.torch[1, :7], executor.home[1, :7], atol=0.01)


@pytest.mark.sim
def test_an_unreachable_grasp_is_invalid_and_leaves_the_other_envs_alone(rig):
    world, executor = rig
    _box_in_the_middle(world)
    result = executor.execute(_grasps(world, [FAR, NARROW, BESIDE, FAR]))
    outcomes = [Outcome(int(o)) for o in result.outcome]
    assert outcomes == [Outcome.INVALID, Outcome.SUCCESS, Outcome.EMPTY, Outcome.INVALID]
    assert float(result.duration[0]) == 0.0 and float(result.duration[3]) == 0.0


def test_the_reach_map_covers_the_bin_and_ends_beyond_the_arms_reach(tmp_path):
    from dexrl.sim.reachability import reach_map, reach_picture

    reach = reach_map(SETTINGS, GripperCfg(), tmp_path, spacing=0.1, margin=0.35, heights=(0.02,), yaw_samples=2)
    inside = (abs(reach.xs)[None, :] <= HALF_X) & (abs(reach.ys)[:, None] <= HALF_Y)
    assert reach.fraction[0][inside].min() == 1.0
    assert reach.fraction[0][:, -1].max() == 0.0, "0.55 m beyond the bin's centre is out of reach"
    picture = reach_picture(reach, SETTINGS.bin.interior_size)
    assert picture.shape[2] == 3 and picture.dtype.name == "uint8"
