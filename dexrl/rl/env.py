"""Building the registered task for stable-baselines3."""

from __future__ import annotations

import gymnasium as gym

from isaaclab.sim import SimulationContext
from isaaclab_rl.sb3 import Sb3VecEnvWrapper
from isaaclab_tasks.utils import resolve_presets

from dexrl.sim.scene_cfg import SceneSettingsCfg
from dexrl.sim.tasks.grasp_correction.grasp_correction_env import GraspCorrectionEnv
from dexrl.sim.tasks.grasp_correction.grasp_correction_env_cfg import GraspCorrectionEnvCfg

__all__ = ["TASK_ID", "make_env", "make_vec_env", "task_cfg"]

TASK_ID = "DexRL-GraspCorrection"


def make_env(cfg: GraspCorrectionEnvCfg) -> GraspCorrectionEnv:
    """The task through gymnasium's registry (as Isaac Lab's CLI builds it). A simulation left in this process
    (e.g. by a :class:`~dexrl.sim.bin_world.BinWorld`) is dropped first: Isaac Lab allows one at a time."""
    SimulationContext.clear_instance()
    return gym.make(TASK_ID, cfg=cfg).unwrapped


def make_vec_env(cfg: GraspCorrectionEnvCfg) -> Sb3VecEnvWrapper:
    """The task as an SB3 vectorized env (one SB3 env per Isaac Lab env)."""
    return Sb3VecEnvWrapper(make_env(cfg))


def task_cfg(settings: SceneSettingsCfg, planner: str = "baseline", planner_weights: str | None = None) -> GraspCorrectionEnvCfg:
    """The task cfg for scene settings (their env count, device and seed become the env's), default presets."""
    cfg = resolve_presets(GraspCorrectionEnvCfg(settings=settings, planner=planner, planner_weights=planner_weights))
    cfg.scene.num_envs, cfg.sim.device, cfg.seed = settings.num_envs, settings.device, settings.seed
    return cfg
