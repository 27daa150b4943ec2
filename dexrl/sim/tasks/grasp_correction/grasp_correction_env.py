"""The one-step grasp-correction task as an Isaac Lab :class:`DirectRLEnv`.

A direct env rather than a manager-based one: the step is not a few physics steps of an action term but a
whole grasp attempt run by :class:`~dexrl.sim.executor.GraspExecutor` (hundreds of physics steps with its own
state machine), and the observation needs the planner's output, which is computed once per step for all envs.
Both fit DirectRLEnv's hooks directly; manager terms would split one batched computation into pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from isaaclab.envs import DirectRLEnv
from isaaclab_newton.physics import NewtonCfg

from dexrl.planning import make_planner
from dexrl.sim.bin_world import BinWorld, build_scene_cfg, physics_cfg
from dexrl.sim.executor import AttemptResult, Outcome
from dexrl.sim.mounts import embodiment_entities
from dexrl.sim.grasp_runner import ASSET_DIR, GraspRunner, View
from dexrl.sim.pool import build_pool
from dexrl.sim.settings import load_scene_settings

from . import mdp
from .grasp_correction_env_cfg import GraspCorrectionEnvCfg

__all__ = ["GraspCorrectionEnv", "StepRecord"]


@dataclass
class StepRecord:
    """What happened in the last step, per env (for evaluation and logging)."""

    view: View  # what the planner saw and proposed
    actions: torch.Tensor  # (N, 4) the clipped actions
    result: AttemptResult  # the executed attempts


class GraspCorrectionEnv(DirectRLEnv):
    """``DexRL-GraspCorrection``: see :class:`GraspCorrectionEnvCfg` and :mod:`.mdp`."""

    cfg: GraspCorrectionEnvCfg

    def __init__(self, cfg: GraspCorrectionEnvCfg, render_mode: str | None = None, **kwargs):
        if not isinstance(cfg.sim.physics, (NewtonCfg, type(None))):
            raise NotImplementedError(
                f"DexRL's bin world runs on Newton only; the physics preset gave {type(cfg.sim.physics).__name__}"
                " (see docs/isaacsim.md for the state of the isaacsim_physx preset)"
            )
        settings = cfg.settings.copy() if cfg.settings is not None else load_scene_settings()
        settings.num_envs, settings.device = cfg.scene.num_envs, cfg.sim.device
        settings.seed = settings.seed if cfg.seed is None else cfg.seed
        settings.check()
        pool = build_pool(settings)
        cfg.scene = build_scene_cfg(settings, pool, extras=embodiment_entities(
            settings.embodiment, cfg.gripper, ASSET_DIR / "gripper", settings.franka))
        cfg.sim.dt, cfg.sim.physics = settings.physics.dt, physics_cfg(settings)
        cfg.observation_space = mdp.observation_space(cfg.crop_size)
        super().__init__(cfg, render_mode, **kwargs)
        world = BinWorld.attach(settings, pool, self.sim, self.scene)
        planner = make_planner(cfg.planner, cfg.planner_weights, settings.device)
        self.runner = GraspRunner.attach(world, planner, cfg.gripper, cfg.executor)
        self.action_scale = torch.tensor(cfg.action_scale(), device=self.device)
        self.view: View | None = None
        self.last: StepRecord | None = None

    # ------------------------------------------------------------------ step
    def _pre_physics_step(self, actions: torch.Tensor) -> None:
        if self.view is None:
            raise RuntimeError("call reset() before the first step()")
        self.actions = actions.clamp(-1.0, 1.0)
        poses = mdp.corrected_poses(self.view.poses, self.actions, self.action_scale)
        self.last = StepRecord(self.view, self.actions, self.runner.execute(poses))

    def _apply_action(self) -> None:
        """Nothing: the attempt ran in :meth:`_pre_physics_step` (the gripper waits at home here)."""

    def _get_rewards(self) -> torch.Tensor:
        success = self.last.result.outcome == Outcome.SUCCESS
        reward = mdp.held_lift_reward(success, self.actions, self.cfg.action_penalty)
        counts = torch.bincount(self.last.result.outcome, minlength=len(Outcome)).float() / self.num_envs
        self.extras["log"] = {f"outcome/{outcome.name.lower()}": counts[outcome] for outcome in Outcome}
        return reward

    def _get_dones(self) -> tuple[torch.Tensor, torch.Tensor]:
        every = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return every, torch.zeros_like(every)  # every attempt ends its episode; none is cut short

    def _reset_idx(self, env_ids: Sequence[int]) -> None:
        # The bins are not reset per episode: the executor re-draws a heap when it is empty or spent.
        self.episode_length_buf[env_ids] = 0

    def _get_observations(self) -> dict:
        self.view = self.runner.observe()
        settings = self.runner.world.settings
        best = self.view.plan.best.to(self.device)
        obs = mdp.policy_observation(
            self.view.depth, best, self.cfg, settings.camera.height_above_floor, settings.bin.wall_height
        )
        return {"policy": obs}
