"""``dexrl bench grasp``: grasp attempts per second (render + plan + execute + judge) on the current device."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    from dexrl.cli._common import add_scene_arguments  # noqa: PLC0415

    add_scene_arguments(parser)
    parser.add_argument("--batches", type=int, default=3, help="timed batches of one attempt per env (default 3)")
    parser.add_argument("--planner", choices=("baseline", "fcgqcnn"), default="baseline")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from dexrl.cli._common import scene_settings_from_args  # noqa: PLC0415
    from dexrl.cli.grasp import make_planner  # noqa: PLC0415

    settings = scene_settings_from_args(args)
    from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415

    start = time.perf_counter()
    runner = GraspRunner(settings, make_planner(args.planner, None, settings.device))
    startup = time.perf_counter() - start
    runner.attempt()  # warm-up: first-use kernel compilation
    sync = torch.cuda.synchronize if settings.device.startswith("cuda") else (lambda: None)
    sync()
    executor, world = runner.executor, runner.world
    redrawn, settled, heap_faults = executor.redrawn_heaps, executor.redrawn_settled, world.heap_faults
    start = time.perf_counter()
    for _ in range(args.batches):
        runner.attempt()
    sync()
    wall = time.perf_counter() - start
    redrawn, settled = executor.redrawn_heaps - redrawn, executor.redrawn_settled - settled
    figures = {
        "device": settings.device,
        "num_envs": settings.num_envs,
        "planner": args.planner,
        "startup_s": round(startup, 2),
        "attempts": args.batches * settings.num_envs,
        "attempts_per_s": round(args.batches * settings.num_envs / wall, 2),
        "s_per_batch": round(wall / args.batches, 3),
        "outcomes": runner.tally.as_dict(),
        # Heaps re-drawn between the timed attempts, how many were at rest when the next attempt began, and
        # how often a heap's physics failed while settling (it was drawn again).
        "redrawn_heaps": redrawn,
        "redrawn_settled": settled,
        "heap_faults": world.heap_faults - heap_faults,
    }
    print("dexrl bench grasp")
    for key, value in figures.items():
        print(f"  {key:<16} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
