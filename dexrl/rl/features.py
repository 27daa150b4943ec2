"""The feature extractor of the grasp-correction policy: a small CNN on the jaw-aligned depth crop and an MLP
on the grasp features, concatenated and projected."""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["GraspCropExtractor"]


class GraspCropExtractor(BaseFeaturesExtractor):
    """Features of the task's dict observation ``{"crop": (1, S, S), "grasp": (G,)}``, both in [-1, 1].

    Args:
        observation_space: the task's dict observation space.
        features_dim: size of the output features.
        channels: output channels of the three conv layers.
    """

    def __init__(self, observation_space: gym.spaces.Dict, features_dim: int = 128, channels: tuple[int, int, int] = (16, 32, 32)):
        super().__init__(observation_space, features_dim)
        crop_shape = observation_space["crop"].shape
        grasp_size = observation_space["grasp"].shape[0]
        c1, c2, c3 = channels
        self.crop_net = nn.Sequential(
            nn.Conv2d(crop_shape[0], c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            crop_features = self.crop_net(torch.zeros(1, *crop_shape)).shape[1]
        self.grasp_net = nn.Sequential(nn.Linear(grasp_size, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(crop_features + 32, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, features_dim) features of a batch of observations."""
        crop = self.crop_net(observations["crop"])
        grasp = self.grasp_net(observations["grasp"])
        return self.head(torch.cat((crop, grasp), dim=1))
