"""``dexrl bench scene``: env-steps/s of the cluttered bin scene and depth images/s, on the current device.

Both figures are measured in the same run after a warm-up (Warp compiles kernels on first use).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    from dexrl.cli._common import add_scene_arguments  # noqa: PLC0415

    add_scene_arguments(parser)
    parser.add_argument("--count", type=int, default=10, help="objects per bin (default 10)")
    parser.add_argument("--steps", type=int, default=240, help="physics steps to time (default 240 = 2 s)")
    parser.add_argument("--renders", type=int, default=10, help="depth renders of all envs to time (default 10)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def _sync(device: str) -> None:
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> int:
    from dexrl.cli._common import scene_settings_from_args  # noqa: PLC0415

    args.overrides = [*args.overrides, f"objects.count_range=[{args.count},{args.count}]"]
    settings = scene_settings_from_args(args)
    from dexrl.sim.world_factory import make_world  # noqa: PLC0415

    start = time.perf_counter()
    world = make_world(settings)
    startup = time.perf_counter() - start
    info, settle_wall = world.timed_round()  # includes first-use kernel compilation
    info, settle_wall = world.timed_round()
    world.render_depth()
    _sync(settings.device)

    start = time.perf_counter()
    world.step(args.steps)
    _sync(settings.device)
    step_wall = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(args.renders):
        world.render_depth()
    _sync(settings.device)
    render_wall = time.perf_counter() - start

    figures = {
        "device": settings.device,
        "num_envs": settings.num_envs,
        "objects_per_bin": args.count,
        "startup_s": round(startup, 2),
        "settle_round_wall_s": round(settle_wall, 3),
        "settle_round_sim_s": round(float(info.settle_time.max()), 3),
        "settled_envs": int(info.settled.sum()),
        "env_steps_per_s": round(settings.num_envs * args.steps / step_wall, 1),
        "depth_images_per_s": round(settings.num_envs * args.renders / render_wall, 1),
        "depth_ms_per_all_envs": round(1000 * render_wall / args.renders, 2),
    }
    width = max(map(len, figures))
    print("dexrl bench scene")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
