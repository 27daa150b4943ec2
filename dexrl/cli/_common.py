"""Command-line options shared by the simulator commands."""

from __future__ import annotations

import argparse


def add_scene_arguments(parser: argparse.ArgumentParser, default_envs: int = 4) -> None:
    parser.add_argument("--envs", type=int, default=default_envs, help=f"number of parallel envs (default {default_envs})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--objects", default=None, help="object set: seen | novel | a folder of meshes (default seen)")
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: cuda:0 if available, else cpu)")
    parser.add_argument(
        "--embodiment", choices=("gantry", "franka"), default=None,
        help="what carries the fingers: the 4-DoF gantry or the Franka Panda arm (default gantry)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. randomization.depth_noise=true objects.count_range=[5,8] (see config/scene.yaml)",
    )


def scene_settings_from_args(args: argparse.Namespace):
    import os  # noqa: PLC0415

    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # keep Warp from probing a GPU it must not use
    from dexrl.sim.settings import load_scene_settings  # noqa: PLC0415

    return load_scene_settings(
        args.overrides,
        num_envs=args.envs,
        seed=args.seed,
        device=args.device,
        embodiment=args.embodiment,
        **{"objects.object_set": args.objects},
    )
