"""Configuration of the one-step grasp-correction task ``DexRL-GraspCorrection``."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

import isaaclab.sim as sim_utils
from isaaclab.envs import DirectRLEnvCfg
from isaaclab.scene import InteractiveSceneCfg
from isaaclab.utils import configclass

from dexrl.sim.executor import ExecutorCfg
from dexrl.sim.gripper import GripperCfg
from dexrl.sim.presets import BinPhysicsCfg
from dexrl.sim.scene_cfg import SceneSettingsCfg

from .mdp import observation_space

__all__ = ["GraspCorrectionEnvCfg"]


@configclass
class GraspCorrectionEnvCfg(DirectRLEnvCfg):
    """One grasp attempt per env per step: observe the planner's best grasp, correct it, execute it, reward a
    held lift. The bin scene (objects, randomization, camera, Newton physics) comes from :attr:`settings`;
    ``scene.num_envs``, ``sim.device`` and ``seed`` override the matching settings when the env is built."""

    # -- the world
    settings: SceneSettingsCfg | None = None  # None: config/scene.yaml with its defaults
    gripper: GripperCfg = GripperCfg()
    executor: ExecutorCfg = ExecutorCfg()
    planner: str = "baseline"  # "baseline", "fcgqcnn" or the ws:// URL of a gqcnn_bridge server
    planner_weights: str | None = None  # FC-GQ-CNN weights (default: the shipped ones)

    # -- observation: the jaw-aligned crop and the grasp features
    crop_window_px: int = 96  # [px] of the depth image a crop covers (GQ-CNN's crop size)
    crop_size: int = 32  # [samples] side of the crop the policy sees (GQ-CNN downsamples 96 -> 32)
    crop_depth_scale: float = 0.05  # [m] depth difference mapped to 1

    # -- action: bounds of the correction in the grasp frame (the seed's bounds)
    max_shift_xy: float = 0.02  # [m] along and across the jaw axis
    max_shift_z: float = 0.02  # [m] deeper (+) or higher (-)
    max_turn: float = math.radians(15.0)  # [rad] about the vertical

    # -- reward
    action_penalty: float = 0.0  # times the mean squared action, subtracted from the 0/1 held-lift reward

    # -- Isaac Lab env settings: one env step is one whole attempt; every episode is one step long
    decimation: int = 1
    episode_length_s: float = 1.0 / 120.0
    action_space: gym.spaces.Box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    observation_space: gym.spaces.Dict = observation_space(32)  # the env sets it from crop_size
    state_space: int = 0  # no separate critic state
    scene: InteractiveSceneCfg = InteractiveSceneCfg(num_envs=64, env_spacing=2.0)  # entities built by the env
    # physics presets newton_mjwarp (default, kit-less) and isaacsim_physx (``physics=NAME`` on Isaac Lab's CLI);
    # the env fills in the Newton solver settings of ``settings.physics``
    sim: sim_utils.SimulationCfg = sim_utils.SimulationCfg(dt=1.0 / 120.0, physics=BinPhysicsCfg())
    ui_window_class_type = None

    def action_scale(self) -> tuple[float, float, float, float]:
        """Largest correction (dx [m], dy [m], dz [m], dtheta [rad])."""
        return (self.max_shift_xy, self.max_shift_xy, self.max_shift_z, self.max_turn)
