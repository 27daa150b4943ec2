"""The session's SAC grasp corrector: the ``DexRL-GraspCorrection`` agent (stable-baselines3) driven by the
session instead of by SB3.

It sees and acts exactly as the task's policy does (:mod:`dexrl.sim.tasks.grasp_correction.mdp`: the
jaw-aligned depth crop and grasp features; a bounded correction in the grasp frame), so it learns online from
the panel's attempts and also loads agents trained with ``dexrl train``.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

from dexrl.grasp import GraspPoses
from dexrl.rl.features import GraspCropExtractor
from dexrl.sim.scene_cfg import SceneSettingsCfg
from dexrl.sim.tasks.grasp_correction import mdp
from dexrl.sim.tasks.grasp_correction.grasp_correction_env_cfg import GraspCorrectionEnvCfg

from .policy import GraspObservation

__all__ = ["SacCorrector"]


class _SpacesOnly(gym.Env):
    """Declares the task's spaces for SB3; the session, not SB3, steps the simulator."""

    def __init__(self, crop_size: int):
        self.observation_space = mdp.observation_space(crop_size)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        raise RuntimeError("SacCorrector's environment is driven by the session, not by SB3")

    def step(self, action):
        raise RuntimeError("SacCorrector's environment is driven by the session, not by SB3")


class SacCorrector:
    """SAC that corrects the planner's best grasp per env, on the task's observation and action.

    Args:
        settings: the session's scene (camera height and wall height scale the grasp features).
        task: observation and action parameters (crop, bounds); the task's defaults if None.
        features_dim, hidden: sizes of the feature extractor's output and of the actor/critic layers.
        batch_size: transitions per gradient step; gradient_steps: steps per ``learn`` call.
        seed: seeds SB3 and its networks.
    """

    def __init__(
        self,
        settings: SceneSettingsCfg,
        task: GraspCorrectionEnvCfg | None = None,
        features_dim: int = 32,
        hidden: tuple[int, ...] = (32, 32),
        batch_size: int = 8,
        gradient_steps: int = 2,
        seed: int = 0,
    ):
        self.task = task or GraspCorrectionEnvCfg()
        self.floor_distance = settings.camera.height_above_floor
        self.wall_height = settings.bin.wall_height
        self.scale = torch.tensor(self.task.action_scale())
        self.batch_size, self.gradient_steps = batch_size, gradient_steps
        self._env = _SpacesOnly(self.task.crop_size)
        self.model = SAC(
            "MultiInputPolicy",
            self._env,
            learning_starts=0,
            buffer_size=10_000,
            batch_size=batch_size,
            policy_kwargs={
                "features_extractor_class": GraspCropExtractor,
                "features_extractor_kwargs": {"features_dim": features_dim},
                "net_arch": list(hidden),
            },
            device="cpu",
            seed=seed,
            verbose=0,
        )
        self.model.set_logger(configure(None, []))
        self._pending: tuple[dict[str, np.ndarray], np.ndarray] | None = None

    @property
    def updates(self) -> int:
        return int(self.model._n_updates)

    def features(self, obs: GraspObservation) -> dict[str, np.ndarray]:
        """The task's policy observation of the session's observation, as NumPy arrays with a leading N."""
        features = mdp.policy_observation(obs.depth, obs.proposed, self.task, self.floor_distance, self.wall_height)
        return {key: value.cpu().numpy() for key, value in features.items()}

    def _apply(self, obs: GraspObservation, action: np.ndarray) -> GraspPoses:
        return mdp.corrected_poses(obs.proposed_poses, torch.as_tensor(action, dtype=torch.float32), self.scale)

    def correct(self, obs: GraspObservation) -> GraspPoses:
        action, _ = self.model.predict(self.features(obs), deterministic=True)
        return self._apply(obs, action)

    def explore(self, obs: GraspObservation) -> GraspPoses:
        features = self.features(obs)
        action, _ = self.model.predict(features, deterministic=False)
        self._pending = (features, action)
        return self._apply(obs, action)

    def learn(self, reward: torch.Tensor) -> None:
        if self._pending is None:
            raise RuntimeError("learn() needs a preceding explore()")
        features, actions = self._pending
        self._pending = None
        buffer = self.model.replay_buffer
        for env, value in enumerate(reward.tolist()):  # one-step episodes: next_obs is never bootstrapped
            obs = {key: array[env : env + 1] for key, array in features.items()}
            buffer.add(obs, obs, actions[env : env + 1], np.array([value]), np.array([True]), [{}])
        if buffer.size() >= self.batch_size:
            self.model.train(gradient_steps=self.gradient_steps, batch_size=self.batch_size)

    def save(self, path: Path) -> Path:
        path = Path(path).with_suffix(".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)
        return path

    def load(self, path: Path) -> None:
        """Replace the agent with a checkpoint (one of :meth:`save` or a ``dexrl train`` run's)."""
        self.model = SAC.load(Path(path), env=self._env, device="cpu")
        self.model.set_logger(configure(None, []))

    @classmethod
    def from_checkpoint(cls, path: Path, settings: SceneSettingsCfg) -> SacCorrector:
        """A corrector with a checkpoint's agent (the session's policy loader, with ``settings`` bound)."""
        corrector = cls(settings)
        corrector.load(path)
        return corrector
