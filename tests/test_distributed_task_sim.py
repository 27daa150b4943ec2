"""``dexrl eval`` under torchrun: two gloo processes on the CPU against single-process runs of each rank's share
(the planner arm on the task env, toy sizes: 2 envs, one step per rank)."""

import json

import pytest
from test_distributed_sim import SCENE, SEED, torchrun

from dexrl.distributed import Rank
from dexrl.sim.grasp_runner import OutcomeTally
from dexrl.sim.settings import load_scene_settings

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def env():
    from dexrl.rl.env import make_env, task_cfg  # noqa: PLC0415

    settings = load_scene_settings(SCENE, num_envs=2, seed=SEED, device="cpu", **{"objects.object_set": "seen"})
    env = make_env(task_cfg(settings))
    yield env
    env.close()


def test_distributed_arm_counts_equal_the_single_process_counts(env, tmp_path):
    from dexrl.rl.evaluate import evaluate_arms, zero_policy  # noqa: PLC0415

    torchrun("eval", "--device", "cpu", "--envs", "2", "--seed", str(SEED), "--sets", "seen", "--attempts", "4",
             "--out", str(tmp_path), *SCENE)
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]

    expected = OutcomeTally()
    for rank in (Rank(0, 2), Rank(1, 2)):
        (alone,) = evaluate_arms(env, {"planner": zero_policy}, 4, seed=SEED, progress=lambda _: None, rank=rank)
        expected.counts += alone.tally.counts
    assert row["attempts"] == 4 == expected.attempts
    assert row["outcomes"] == expected.as_dict()
