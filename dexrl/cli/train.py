"""``dexrl train``: train the SAC grasp corrector on ``DexRL-GraspCorrection``.

Hyperparameters come from the task's ``agents/sb3_sac_cfg.yaml`` (``--agent-cfg`` for another file). The run
folder (``--out``) gets the final ``model.zip``, periodic checkpoints, TensorBoard logs (``tb/``), the agent YAML
and ``train.json`` with the success curve. ``--init`` fine-tunes a trained agent (e.g. ``--objects novel``);
``--resume`` continues a run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--planner", default="baseline", help="baseline | fcgqcnn | ws://host:port of a gqcnn_bridge (default baseline)")
    parser.add_argument("--weights", default=None, help="FC-GQ-CNN weights for --planner fcgqcnn (default: the shipped ones)")


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser, default_envs=64)
    add_task_arguments(parser)
    parser.add_argument("--agent-cfg", type=Path, default=None, help="agent YAML (default: the task's sb3_sac_cfg.yaml)")
    parser.add_argument("--timesteps", type=int, default=None, help="transitions (attempts) to train for (default: the agent YAML's n_timesteps)")
    parser.add_argument("--time-budget", type=float, default=None, help="stop after this many wall-clock seconds")
    parser.add_argument("--checkpoint-every", type=int, default=50_000, help="transitions between checkpoints (default 50000)")
    parser.add_argument("--init", type=Path, default=None, help="start from this agent's weights (fine-tuning)")
    parser.add_argument("--resume", type=Path, default=None, help="continue this run's checkpoint")
    parser.add_argument("--out", type=Path, default=Path("out/train"), help="run folder (default out/train)")


def run(args: argparse.Namespace) -> int:
    settings = scene_settings_from_args(args)
    from dexrl.rl.agent_cfg import DEFAULT_AGENT_YAML, load_agent_cfg  # noqa: PLC0415 (imports SB3)
    from dexrl.rl.env import task_cfg  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.rl.train import RunCfg, train  # noqa: PLC0415

    overrides = {"seed": args.seed} | ({"n_timesteps": args.timesteps} if args.timesteps else {})
    agent = load_agent_cfg(args.agent_cfg or DEFAULT_AGENT_YAML, overrides)
    run_cfg = RunCfg(args.out, args.time_budget, args.checkpoint_every, args.resume, args.init)
    model = train(task_cfg(settings, args.planner, args.weights), agent, run_cfg)
    print(f"[dexrl train] agent saved to {model}")
    return 0
