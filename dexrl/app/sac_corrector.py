"""A small SAC grasp corrector (stable-baselines3) that learns from the session's attempts.

Each attempt is a one-step episode: the observation is a coarse depth patch around the planner's best grasp
(relative to the grasp depth) plus its q; the action shifts the grasp in the world XY plane and turns its yaw;
the reward is 1 for a successful lift, else 0. It is the session's built-in trainer until a task-level SAC
agent is plugged in through :class:`dexrl.app.GraspTrainer`.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

from dexrl.grasp import GraspPoses, wrap_half_turn

from .policy import GraspObservation

__all__ = ["SacCorrector"]


class _SpacesOnly(gym.Env):
    """Declares the spaces for SB3; the session, not SB3, steps the simulator."""

    def __init__(self, observation_size: int):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (observation_size,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        raise RuntimeError("SacCorrector's environment is driven by the session, not by SB3")

    def step(self, action):
        raise RuntimeError("SacCorrector's environment is driven by the session, not by SB3")


class SacCorrector:
    """SAC that corrects the planner's best grasp per env.

    Args:
        patch: side of the depth patch in samples (observation size ``patch**2 + 1``).
        stride: pixels between patch samples.
        max_shift: largest XY correction [m]; max_turn: largest yaw correction [rad].
        hidden: widths of the actor and critic hidden layers.
        batch_size: transitions per gradient step; gradient_steps: steps per ``learn`` call.
        seed: seeds SB3 and its networks.
    """

    def __init__(
        self,
        patch: int = 8,
        stride: int = 6,
        max_shift: float = 0.01,
        max_turn: float = 0.26,
        hidden: tuple[int, ...] = (32, 32),
        batch_size: int = 8,
        gradient_steps: int = 2,
        seed: int = 0,
    ):
        self.patch, self.stride = patch, stride
        self.max_shift, self.max_turn = max_shift, max_turn
        self.batch_size, self.gradient_steps = batch_size, gradient_steps
        self._env = _SpacesOnly(patch * patch + 1)
        self.model = SAC(
            "MlpPolicy",
            self._env,
            learning_starts=0,
            buffer_size=10_000,
            batch_size=batch_size,
            policy_kwargs={"net_arch": list(hidden)},
            device="cpu",
            seed=seed,
            verbose=0,
        )
        self.model.set_logger(configure(None, []))
        self._pending: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def updates(self) -> int:
        return int(self.model._n_updates)

    def features(self, obs: GraspObservation) -> np.ndarray:
        """(N, patch**2 + 1) float32: depth around each best grasp minus its depth [m] scaled by 1/0.05 and
        clipped to [-1, 1], then the grasp's q."""
        half = (self.patch - 1) * self.stride / 2
        offsets = torch.arange(self.patch) * self.stride - half
        height, width = obs.depth.shape[-2:]
        centre = obs.proposed.center.round()
        cols = (centre[:, 0:1] + offsets).long().clamp(0, width - 1)  # (N, patch)
        rows = (centre[:, 1:2] + offsets).long().clamp(0, height - 1)
        env = torch.arange(len(centre)).view(-1, 1, 1)
        patch = obs.depth[env, rows.unsqueeze(2), cols.unsqueeze(1)]  # (N, patch, patch)
        relative = ((patch - obs.proposed.depth.view(-1, 1, 1)) / 0.05).clamp(-1, 1)
        return torch.cat((relative.flatten(1), obs.proposed.q.view(-1, 1)), 1).float().numpy()

    def _apply(self, obs: GraspObservation, action: np.ndarray) -> GraspPoses:
        action = torch.as_tensor(action, dtype=torch.float32)
        base = obs.proposed_poses
        position = base.position.clone()
        position[:, :2] += action[:, :2] * self.max_shift
        return GraspPoses(
            position=position,
            yaw=wrap_half_turn(base.yaw + action[:, 2] * self.max_turn),
            width=base.width.clone(),
        )

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
        for obs, action, value in zip(features, actions, reward.tolist()):  # one-step episodes
            buffer.add(obs[None], obs[None], action[None], np.array([value]), np.array([True]), [{}])
        if buffer.size() >= self.batch_size:
            self.model.train(gradient_steps=self.gradient_steps, batch_size=self.batch_size)

    def save(self, path: Path) -> Path:
        path = Path(path).with_suffix(".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)
        return path

    def load(self, path: Path) -> None:
        self.model = SAC.load(Path(path), env=self._env, device="cpu")
        self.model.set_logger(configure(None, []))

    @classmethod
    def from_checkpoint(cls, path: Path) -> SacCorrector:
        """A corrector with a checkpoint's weights (the session's policy loader)."""
        corrector = cls()
        corrector.load(path)
        return corrector
