"""SAC on DexRL-GraspCorrection end to end on the CPU: train briefly, reload, evaluate; and the isaaclab CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import grasp_task_cfg

pytestmark = pytest.mark.sim

TINY_AGENT = {
    "n_timesteps": 8,  # 4 env steps of 2 envs
    "learning_starts": 2,
    "batch_size": 4,
    "gradient_steps": 2,
    "buffer_size": 64,
    "device": "cpu",
    "policy_kwargs": {
        "features_extractor_class": "dexrl.rl.features:GraspCropExtractor",
        "features_extractor_kwargs": {"features_dim": 16},
        "net_arch": [16],
    },
}


def test_a_short_sac_run_writes_a_checkpoint_that_reloads_and_evaluates(box_set, tmp_path):
    from dexrl.rl.agent_cfg import load_agent_cfg  # noqa: PLC0415
    from dexrl.rl.env import make_env  # noqa: PLC0415
    from dexrl.rl.evaluate import evaluate_arms, sac_policy, summarize, write_results, zero_policy  # noqa: PLC0415
    from dexrl.rl.train import RunCfg, train  # noqa: PLC0415

    agent = load_agent_cfg(overrides=TINY_AGENT)
    model = train(grasp_task_cfg(box_set), agent, RunCfg(tmp_path / "run", checkpoint_every=4, progress=False))
    assert model.is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())  # periodic checkpoints
    run = json.loads((tmp_path / "run" / "train.json").read_text())
    assert run["transitions"] >= 8 and run["gradient_updates"] > 0
    assert len(run["curve"]["success"]) == run["transitions"] // 2

    env = make_env(grasp_task_cfg(box_set, seed=1))
    try:
        scores = evaluate_arms(env, {"planner": zero_policy, "planner+sac": sac_policy(model, "cpu")}, attempts=2, progress=lambda _: None)
    finally:
        env.close()
    assert [s.arm for s in scores] == ["planner", "planner+sac"]
    assert all(s.tally.attempts >= 2 for s in scores)
    summary = summarize(scores)
    written = write_results(summary, tmp_path / "eval")
    assert all(path.is_file() for path in written)
    assert "planner+sac" in (tmp_path / "eval" / "results.md").read_text()


def test_the_task_trains_through_the_isaaclab_cli(tmp_path):
    isaaclab = shutil.which("isaaclab", path=str(Path(sys.executable).parent))
    assert isaaclab, "the isaaclab CLI is installed with isaaclab[sb3]"
    result = subprocess.run(
        [isaaclab, "train", "--rl_library", "sb3", "--task", "DexRL-GraspCorrection", "--num_envs", "2",
         "--device", "cpu", "--max_iterations", "1"],
        cwd=tmp_path, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    models = list((tmp_path / "logs" / "sb3" / "DexRL-GraspCorrection").glob("*/model.zip"))
    assert len(models) == 1
