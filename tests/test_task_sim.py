"""DexRL-GraspCorrection with the real kit-less engine: spaces, zero and clipped actions, the reward."""

import math

import pytest
import torch
from conftest import grasp_task_cfg

from dexrl.sim.executor import Outcome

pytestmark = pytest.mark.sim
BOX_HEIGHT = 0.04


@pytest.fixture(scope="module")
def env(box_set):
    from dexrl.rl.env import make_env  # noqa: PLC0415

    env = make_env(grasp_task_cfg(box_set))
    yield env
    env.close()


def _box_in_the_middle(env) -> dict:
    """Place the box flat in the middle of every bin, and return the observation of it."""
    world = env.runner.world
    pose = torch.tensor([0.0, 0.0, world.settings.bin.floor_z + BOX_HEIGHT / 2, 0, 0, 0, 1.0])
    world.place_objects(torch.arange(env.num_envs), torch.zeros(env.num_envs, 1, dtype=torch.long), pose.expand(env.num_envs, 1, 7))
    obs, _ = env.reset()
    return obs


def _commanded_world(env) -> torch.Tensor:
    return env.last.result.commanded.position + env.runner.world.env_origins


def test_observations_match_the_declared_spaces(env):
    obs = _box_in_the_middle(env)["policy"]
    space = env.single_observation_space["policy"]
    for key in ("crop", "grasp"):
        assert obs[key].shape == (env.num_envs, *space[key].shape)
        assert obs[key].dtype == torch.float32
        assert obs[key].min() >= -1.0 and obs[key].max() <= 1.0
    # the box top is nearer to the camera than the grasp centre: the crop shows it as negative depths
    assert (obs["crop"] < -0.1).any()


def test_a_zero_action_executes_exactly_the_planner_grasp(env):
    _box_in_the_middle(env)
    planned = env.view.poses
    env.step(torch.zeros(env.num_envs, 4))
    assert torch.allclose(_commanded_world(env), planned.position, atol=1e-6)
    assert torch.allclose(env.last.result.commanded.yaw, planned.yaw, atol=1e-6)


def test_actions_beyond_the_bounds_execute_the_bounded_correction(env):
    _box_in_the_middle(env)
    planned = env.view.poses
    env.step(torch.tensor([[5.0, -5.0, 5.0, 5.0]] * env.num_envs))
    assert torch.equal(env.last.actions, torch.tensor([[1.0, -1.0, 1.0, 1.0]] * env.num_envs))
    offset = _commanded_world(env) - planned.position
    assert torch.allclose(torch.linalg.norm(offset[:, :2], dim=-1), torch.full((env.num_envs,), math.hypot(0.02, 0.02)), atol=1e-6)
    assert torch.allclose(offset[:, 2], torch.full((env.num_envs,), -0.02), atol=1e-6)


def test_the_reward_is_one_for_a_held_lift_and_zero_otherwise(env):
    _box_in_the_middle(env)
    # env 0 keeps the planner's grasp across the box; env 1 moves it 2 cm along the jaw axis, onto the box's edge
    obs, reward, terminated, truncated, _ = env.step(torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0]]))
    outcome = env.last.result.outcome
    assert Outcome(int(outcome[0])) == Outcome.SUCCESS
    assert torch.equal(reward, (outcome == Outcome.SUCCESS).float())
    assert terminated.all() and not truncated.any()  # every episode is one attempt long
