"""``dexrl eval``: the result table of the grasp-correction agent.

For each object set (``--sets``), the planner alone (zero action) and planner + SAC (``--checkpoint``) run at
least ``--attempts`` attempts each on held-out heaps, in one world whose envs are dealt to the arms in turn. With
``--finetuned`` (an agent fine-tuned on the novel set), the novel set gets a third arm and the table reports how
much of the seen-to-novel drop the fine-tuning recovers. Writes results.json, results.md and results.png.
Under ``torchrun --nproc_per_node=N`` the attempts are split over the ranks (one GPU each) and their counts summed
before the intervals are computed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args
from .train import add_task_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser, default_envs=64)
    add_task_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, default=None, help="SAC agent (model.zip); without it only the planner runs")
    parser.add_argument("--finetuned", type=Path, default=None, help="SAC agent fine-tuned on the novel set")
    parser.add_argument("--sets", default="seen,novel", help="object sets, comma-separated (default seen,novel)")
    parser.add_argument("--attempts", type=int, default=2000, help="attempts per arm and set (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("out/eval_sac"), help="output folder (default out/eval_sac)")


def adaptation(rows: list[dict]) -> dict | None:
    """How much of the seen-to-novel drop of the agent the fine-tuned agent recovers on the novel set."""
    rate = {(row["object_set"], row["arm"]): row["success_rate"] for row in rows}
    seen, novel, tuned = rate.get(("seen", "planner+sac")), rate.get(("novel", "planner+sac")), rate.get(("novel", "planner+sac-finetuned"))
    if None in (seen, novel, tuned):
        return None
    drop = seen - novel
    return {"seen": seen, "novel": novel, "novel_finetuned": tuned, "drop": drop,
            "recovered_fraction": (tuned - novel) / drop if drop > 0 else None}


def run(args: argparse.Namespace) -> int:
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    from dexrl import distributed  # noqa: PLC0415
    from dexrl.rl.env import make_env, task_cfg  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.rl.evaluate import evaluate_arms, markdown_table, sac_policy, summarize, write_results, zero_policy  # noqa: PLC0415

    scores = []
    with distributed.session(args.device) as (rank, device):
        args.device = device
        for object_set in sets:
            args.objects = object_set
            settings = scene_settings_from_args(args)
            arms = {"planner": zero_policy}
            if args.checkpoint:
                arms["planner+sac"] = sac_policy(args.checkpoint, settings.device)
            if args.finetuned and object_set == "novel":
                arms["planner+sac-finetuned"] = sac_policy(args.finetuned, settings.device)
            env = make_env(task_cfg(settings, args.planner, args.weights))
            try:
                scores += evaluate_arms(env, arms, args.attempts, seed=args.seed, rank=rank)
            finally:
                env.close()
    if not rank.is_main:
        return 0
    summary = summarize(scores)
    summary["adaptation"] = adaptation(summary["rows"])
    summary["run"] = {"envs": args.envs, "device": settings.device, "planner": args.planner, "seed": args.seed,
                      "embodiment": settings.embodiment,
                      "ranks": rank.world_size,
                      "checkpoint": str(args.checkpoint) if args.checkpoint else None,
                      "finetuned": str(args.finetuned) if args.finetuned else None}
    written = write_results(summary, args.out)
    print(markdown_table(summary))
    if summary["adaptation"]:
        print(f"adaptation: {summary['adaptation']}")
    print("written: " + ", ".join(str(path) for path in written))
    return 0
