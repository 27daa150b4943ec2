"""``dexrl demo``: the README's demo on the embedded default (kit-less Newton; the GPU if there is one).

Builds randomized bins of the seen object set, plans a grasp per bin with FC-GQ-CNN when its weights are
available (else the baseline planner), executes the grasps in physics, and writes to ``--out``: per env a
PNG strip (planned grasp on the depth image | the view after the lift), the settled depth images, and
``summary.json`` with the outcome counts and the success rate with its 95% confidence interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--batches", type=int, default=2, help="grasp attempts per env (default 2)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")


def run(args: argparse.Namespace) -> int:
    settings = scene_settings_from_args(args)
    from dexrl.planning import default_planner  # noqa: PLC0415
    from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.sim.scene_io import write_scene_round  # noqa: PLC0415
    from dexrl.sim.strips import write_attempt_strips  # noqa: PLC0415

    planner, planner_name = default_planner(settings.device)
    print(f"[demo] {settings.num_envs} bins of the {settings.objects.object_set} set on {settings.device}, planner: {planner_name}")
    runner = GraspRunner(settings, planner)
    args.out.mkdir(parents=True, exist_ok=True)
    write_scene_round(runner.world, runner.world.round, args.out)
    for index in range(args.batches):
        batch = runner.attempt(render_after_lift=True)
        write_attempt_strips(batch, args.out, f"attempt{index:02d}", settings.camera.intrinsics.fx)
        print(f"[demo] attempt {index + 1}/{args.batches}: {runner.tally.summary()}")
    summary = {"planner": planner_name, "device": settings.device, "envs": settings.num_envs, "seed": settings.seed,
               "attempts": runner.tally.attempts, "outcomes": runner.tally.as_dict(),
               "heaps_redrawn_after_physics_faults": runner.world.heap_faults}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] wrote strips, depth images and summary.json to {args.out}")
    return 0
