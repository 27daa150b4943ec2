"""The SAC agent's hyperparameters: the task's ``sb3_sac_cfg.yaml`` (or another YAML) as SB3 arguments."""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dexrl.config import ConfigError

__all__ = ["AgentCfg", "DEFAULT_AGENT_YAML", "load_agent_cfg"]

DEFAULT_AGENT_YAML = Path(__file__).resolve().parents[1] / "sim" / "tasks" / "grasp_correction" / "agents" / "sb3_sac_cfg.yaml"


@dataclass
class AgentCfg:
    """SB3 SAC constructor arguments (``kwargs``, classes resolved) and the run's length and seed."""

    policy: str
    n_timesteps: int
    seed: int
    kwargs: dict[str, Any]
    source: dict[str, Any]  # the YAML as read, written beside every run


def _resolve_class(spec: str):
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"agent cfg: cannot import {spec!r} ({error})") from error


def load_agent_cfg(path: Path = DEFAULT_AGENT_YAML, overrides: dict[str, Any] | None = None) -> AgentCfg:
    """Read an agent YAML, apply ``overrides`` (top-level keys), resolve ``module:Class`` strings in
    ``policy_kwargs`` and ``nn.X`` activation names."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"agent cfg {path} does not exist")
    source = yaml.safe_load(path.read_text()) or {}
    source.update(overrides or {})
    kwargs = copy.deepcopy(source)
    try:
        policy = kwargs.pop("policy")
        n_timesteps = int(kwargs.pop("n_timesteps"))
        seed = int(kwargs.pop("seed"))
    except KeyError as error:
        raise ConfigError(f"agent cfg {path}: missing key {error}") from error
    policy_kwargs = kwargs.get("policy_kwargs", {})
    for key in ("features_extractor_class",):
        if isinstance(policy_kwargs.get(key), str):
            policy_kwargs[key] = _resolve_class(policy_kwargs[key])
    if isinstance(policy_kwargs.get("activation_fn"), str):
        policy_kwargs["activation_fn"] = _resolve_class("torch.nn:" + policy_kwargs["activation_fn"].removeprefix("nn."))
    return AgentCfg(policy=policy, n_timesteps=n_timesteps, seed=seed, kwargs=kwargs, source=source)
