"""``dexrl eval-planner``: closed-loop success of FC-GQ-CNN and the baseline planner on held-out heaps.

Each planner's best grasp per bin is executed in physics for ``--attempts`` attempts; the table gives the
success rate with its 95% Wilson interval and the outcome breakdown (``eval_<set>.json`` / ``.md`` in --out).
Run it once per object set (``--objects seen``, ``--objects novel``). Under ``torchrun --nproc_per_node=N`` the
attempts are split over the ranks (one GPU each) and their counts summed before the intervals are computed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--attempts", type=int, default=1000, help="attempts per planner (default 1000)")
    parser.add_argument("--planners", default="fcgqcnn,baseline", help="comma-separated: fcgqcnn, baseline (default both)")
    parser.add_argument("--weights", type=Path, default=None, help="FC-GQ-CNN weights (default: the shipped ones)")
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="output folder (default out/eval)")


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.planners.split(",") if name.strip()]
    unknown = [name for name in names if name not in ("fcgqcnn", "baseline")]
    if unknown or not names:
        raise SystemExit(f"dexrl eval-planner: --planners: unknown planner(s) {unknown}; choose fcgqcnn, baseline")
    from dexrl import distributed  # noqa: PLC0415

    with distributed.session(args.device) as (rank, device):
        args.device = device
        settings = scene_settings_from_args(args)
        from dexrl.planning import make_planner  # noqa: PLC0415
        from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415 (imports Isaac Lab)
        from dexrl.synth.evaluate import evaluate_planners, markdown_table, write_scores  # noqa: PLC0415

        planners = {name: make_planner(name, args.weights, settings.device) for name in names}
        runner = GraspRunner(settings, planners[names[0]])
        scores = evaluate_planners(runner, planners, args.attempts, seed=args.seed, rank=rank)
    if rank.is_main:
        write_scores(scores, args.out, {"envs": settings.num_envs, "device": settings.device, "seed": args.seed,
                                        "embodiment": settings.embodiment,
                                        "ranks": rank.world_size,
                                        "weights": str(args.weights) if args.weights else "shipped"})
        print(markdown_table(scores))
    return 0
