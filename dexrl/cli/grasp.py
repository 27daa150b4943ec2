"""``dexrl grasp``: execute grasp attempts in parallel envs; print outcome counts and the success rate with a
95% confidence interval; write a PNG strip per env (planned grasp on the depth image | view after the lift)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dexrl.planning import make_planner

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--attempts", type=int, default=8, help="attempts in total, rounded up to whole batches of --envs")
    parser.add_argument("--planner", choices=("baseline", "fcgqcnn"), default="baseline", help="grasp planner (default baseline)")
    parser.add_argument("--weights", type=Path, default=None, help="FC-GQ-CNN weights (default: the shipped ones)")
    parser.add_argument("--strips", type=int, default=1, help="write PNG strips for the first N batches (default 1)")
    parser.add_argument("--out", type=Path, default=Path("out/grasp"), help="output folder (default out/grasp)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    settings = scene_settings_from_args(args)
    from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.sim.strips import write_attempt_strips  # noqa: PLC0415

    runner = GraspRunner(settings, make_planner(args.planner, args.weights, settings.device))
    args.out.mkdir(parents=True, exist_ok=True)
    batches = max(1, -(-args.attempts // settings.num_envs))
    for index in tqdm(range(batches), desc="grasp batches", unit="batch"):
        batch = runner.attempt(render_after_lift=index < args.strips)
        if index < args.strips:
            write_attempt_strips(batch, args.out, f"batch{index:03d}", settings.camera.intrinsics.fx)
    summary = {"planner": args.planner, "object_set": settings.objects.object_set, "seed": settings.seed,
               "envs": settings.num_envs, "attempts": runner.tally.attempts, "outcomes": runner.tally.as_dict(),
               "faults_reset": runner.executor.fault_count}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{args.planner} planner, {settings.objects.object_set} set: {runner.tally.summary()}")
    return 0
