"""Train the SAC grasp corrector on ``DexRL-GraspCorrection`` (``dexrl train``).

A run folder holds ``model.zip`` (the final agent), ``checkpoints/`` (periodic), ``tb/`` (TensorBoard),
``agent.yaml`` (the hyperparameters used) and ``train.json`` (settings and the success curve).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

from dexrl.sim.tasks.grasp_correction.grasp_correction_env_cfg import GraspCorrectionEnvCfg

from .agent_cfg import AgentCfg
from .env import make_vec_env

__all__ = ["RunCfg", "train"]


@dataclass
class RunCfg:
    """Where and how long a training run goes.

    Attributes:
        out: the run folder.
        time_budget_s: stop after this many wall-clock seconds (None: after the agent cfg's n_timesteps).
        checkpoint_every: transitions between checkpoints.
        resume: continue a run from this checkpoint (step count, optimizers; the replay buffer restarts empty).
        init: start from this checkpoint's weights with a fresh step count (fine-tuning, e.g. on novel objects).
    """

    out: Path
    time_budget_s: float | None = None
    checkpoint_every: int = 50_000
    resume: Path | None = None
    init: Path | None = None
    progress: bool = True


@dataclass
class _Curve:
    transitions: list[int] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


class _Progress(BaseCallback):
    """Records the success rate of every env step, logs it, prints progress and stops at the time budget."""

    def __init__(self, curve: _Curve, time_budget_s: float | None, total: int, echo: bool):
        super().__init__()
        self.curve, self.time_budget_s, self.total, self.echo = curve, time_budget_s, total, echo
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        success = float(np.mean(self.locals["rewards"] > 0.5))
        elapsed = time.perf_counter() - self.start
        self.curve.transitions.append(int(self.num_timesteps))
        self.curve.success.append(success)
        self.curve.seconds.append(round(elapsed, 2))
        self.logger.record("rollout/success_rate", success)
        recent = float(np.mean(self.curve.success[-10:]))
        if self.echo:
            print(f"[dexrl train] {self.num_timesteps}/{self.total} transitions, {elapsed:.0f} s, success (last 10 steps) {100 * recent:.1f}%", flush=True)
        self.logger.dump(self.num_timesteps)
        return self.time_budget_s is None or elapsed < self.time_budget_s


def train(env_cfg: GraspCorrectionEnvCfg, agent: AgentCfg, run: RunCfg) -> Path:
    """Train SAC on the task; returns the final model file."""
    if run.resume and run.init:
        raise ValueError("give either resume or init, not both")
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "agent.yaml").write_text(yaml.safe_dump(agent.source, sort_keys=False))
    env = make_vec_env(env_cfg)
    try:
        checkpoint = run.resume or run.init
        if checkpoint is not None:
            model = SAC.load(checkpoint, env=env, device=agent.kwargs.get("device", "auto"))
            model.tensorboard_log = str(run.out / "tb")
        else:
            model = SAC(agent.policy, env, seed=agent.seed, tensorboard_log=str(run.out / "tb"), verbose=0, **agent.kwargs)
        curve = _Curve()
        callbacks = [
            CheckpointCallback(max(1, run.checkpoint_every // env.num_envs), str(run.out / "checkpoints"), name_prefix="sac"),
            _Progress(curve, run.time_budget_s, agent.n_timesteps, run.progress),
        ]
        start = time.perf_counter()
        model.learn(agent.n_timesteps, callback=callbacks, log_interval=None, reset_num_timesteps=run.resume is None)
        final = run.out / "model.zip"
        model.save(final)
        summary = {
            "envs": env.num_envs,
            "object_set": env.unwrapped.runner.world.settings.objects.object_set,
            "embodiment": env.unwrapped.runner.world.settings.embodiment,
            "planner": env_cfg.planner,
            "transitions": int(model.num_timesteps),
            "gradient_updates": int(model._n_updates),
            "wall_s": round(time.perf_counter() - start, 1),
            "resumed_from": str(run.resume) if run.resume else None,
            "initialized_from": str(run.init) if run.init else None,
            "curve": vars(curve),
        }
        (run.out / "train.json").write_text(json.dumps(summary, indent=1))
        return final
    finally:
        env.close()
