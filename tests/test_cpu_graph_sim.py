"""CPU graphs of the physics step: bit-identical to eager stepping, and actually replayed."""

import pytest
import torch

from dexrl.grasp import GraspPoses
from dexrl.sim.bin_world import BinWorld
from dexrl.sim.cpu_graph import cpu_step_graph_stats
from dexrl.sim.executor import ExecutorCfg, GraspExecutor, Outcome
from dexrl.sim.mounts import embodiment_entities
from dexrl.sim.gripper import GripperCfg
from dexrl.sim.scene_cfg import SceneSettingsCfg
from primitive_pools import box

pytestmark = pytest.mark.sim
BOX = (0.03, 0.07, 0.04)  # [m]


def _run(asset_dir, use_cpu_graph: bool) -> dict:
    """A seeded heap drawn and settled, then the box placed in the middle and one grasp per env at it: the
    final state, the outcomes, and the CPU graph recordings and replays meanwhile."""
    settings = SceneSettingsCfg(num_envs=2, device="cpu", seed=5)
    settings.objects.pool_size = 1
    settings.objects.count_range = (1, 1)
    settings.physics.use_cpu_graph = use_cpu_graph
    gripper = GripperCfg()
    before = cpu_step_graph_stats()
    world = BinWorld(settings, [box(BOX)], extras=embodiment_entities("gantry", gripper, asset_dir))
    executor = GraspExecutor(world, gripper, ExecutorCfg(attempts_per_heap=1000))
    info = world.new_round()
    z = world.settings.bin.floor_z + BOX[2] / 2
    world.place_objects(torch.arange(2), torch.zeros(2, 1, dtype=torch.long), torch.tensor([[[0.0, 0.0, z, 0, 0, 0, 1.0]]] * 2))
    position = torch.tensor([[0.0, 0.0, z]] * 2) + world.env_origins
    yaw = torch.tensor([0.0, 0.4])  # env 0 across the 3 cm side, env 1 at a slant
    result = executor.execute(GraspPoses(position=position, yaw=yaw, width=torch.full((2,), 0.05)))
    after = cpu_step_graph_stats()
    return {
        "settle_time": info.settle_time,
        "outcome": result.outcome,
        "objects": world.objects.data.body_pos_w.torch.clone(),
        "quats": world.objects.data.body_quat_w.torch.clone(),
        "joints": executor.robot.data.joint_pos.torch.clone(),
        "replays": after["replays"] - before["replays"],
        "recordings": after["recordings"] - before["recordings"],
    }


def test_cpu_graph_steps_are_bit_identical_to_eager_steps(tmp_path):
    eager = _run(tmp_path / "a", use_cpu_graph=False)
    graph = _run(tmp_path / "b", use_cpu_graph=True)
    assert eager["replays"] == 0 and eager["recordings"] == 0
    # Hundreds of steps (settle, attempt) replayed from one recording: the graph path was taken.
    assert graph["recordings"] == 1 and graph["replays"] > 200, graph
    assert Outcome(int(graph["outcome"][0])) == Outcome.SUCCESS  # something happened worth comparing
    for key in ("settle_time", "outcome", "objects", "quats", "joints"):
        assert torch.equal(eager[key], graph[key]), (key, eager[key], graph[key])
