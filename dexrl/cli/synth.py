"""``dexrl synth``: synthesize physics-labelled grasps for FC-GQ-CNN training (NPZ shards + manifest).

Renders the randomized bins, samples candidate grasps (``--mix uniform=..,edge=..,policy=..``; the policy
source needs ``--policy-weights``), executes them in parallel envs and records crop, depth, angle and
success per attempt. Work comes in blocks of ``--attempts-per-env`` attempts in every env, from fresh heaps,
split by env into shards of about ``--shard-size`` grasps. Resumable: run the same command again and it
continues after the last finished block.

Under ``torchrun --nproc_per_node=N -m dexrl synth ...`` each rank owns one GPU (``cuda:LOCAL_RANK``, or the CPU
with ``--device cpu``) and runs every N-th block, and rank 0 writes the one manifest at the end. In lock-step the
dataset is the same as one process's (block b is seeded by ``--seed`` and b alone); a stream seeds once per
process, so its later blocks' heaps depend on the order in which envs reached them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import add_scene_arguments, scene_settings_from_args

if TYPE_CHECKING:
    from dexrl.distributed import Rank
    from dexrl.synth.candidates import CandidateMix
    from dexrl.synth.synthesize import SynthStats


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--grasps", type=int, default=10_000, help="labelled grasps in total (default 10000)")
    parser.add_argument("--shard-size", type=int, default=8192, help="grasps per shard (default 8192)")
    parser.add_argument(
        "--attempts-per-env", type=int, default=None, metavar="K",
        help="attempts each env makes per block, from fresh heaps; the block is split by env into shards of about "
        "--shard-size grasps (default: --shard-size / --envs, one shard per block). Every block settles fresh heaps, "
        "so a small K costs time: streamed on an H200, K = 4 at 4096 envs labelled about 1.0 M grasps/h, K = 2 at 8192 envs 0.68 M/h",
    )
    parser.add_argument("--mix", default="uniform=0.5,edge=0.5", help="candidate sources and weights (default uniform=0.5,edge=0.5)")
    parser.add_argument("--policy-weights", type=Path, default=None, help="FC-GQ-CNN weights of the policy source")
    parser.add_argument("--out", type=Path, default=Path("data/synth"), help="dataset folder (default data/synth)")
    parser.add_argument(
        "--time-budget", type=float, default=None, metavar="SECONDS",
        help="start no block that would end past this many seconds (run again to continue)",
    )
    parser.add_argument(
        "--stream", action="store_true",
        help="stream the attempts: an env draws and starts its next candidate once its last is judged, instead "
        "of waiting for the whole batch (the slowest attempt) to end, and enters the next block on a fresh heap of "
        "its own; only the end of the run waits for the slowest env",
    )


def run(args: argparse.Namespace) -> int:
    from dexrl.synth.candidates import CandidateMix  # noqa: PLC0415

    try:
        mix = CandidateMix.parse(args.mix)
    except ValueError as error:
        raise SystemExit(f"dexrl synth: --mix: {error}") from None
    if mix.policy > 0 and args.policy_weights is None:
        raise SystemExit("dexrl synth: the policy source needs --policy-weights")
    from dexrl import distributed  # noqa: PLC0415

    from dexrl.synth.synthesize import BlockLayoutError  # noqa: PLC0415

    with distributed.session(args.device) as (rank, device):
        args.device = device
        try:
            stats = _synthesize(args, mix, rank)
        except BlockLayoutError as error:
            raise SystemExit(f"dexrl synth: {error}") from None
    if rank.is_main:
        print(json.dumps(stats.as_dict(), indent=2))
        print(f"[synth] {stats.grasps} grasps in {stats.seconds:.1f} s ({stats.grasps_per_hour:,.0f} per hour) -> {args.out}")
    return 0


def _synthesize(args: argparse.Namespace, mix: CandidateMix, rank: Rank) -> SynthStats:
    """This rank's part of the synthesis (the statistics summed over all ranks)."""
    settings = scene_settings_from_args(args)
    import torch  # noqa: PLC0415

    from dexrl.grasp.baseline import HighestObjectPlanner  # noqa: PLC0415
    from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.synth.candidates import CandidateSampler  # noqa: PLC0415
    from dexrl.synth.synthesize import SynthConfig, synthesize  # noqa: PLC0415

    policy = None
    if mix.policy > 0:
        from dexrl.gqcnn import load_planner  # noqa: PLC0415

        policy = load_planner(args.policy_weights, device=settings.device)
    runner = GraspRunner(settings, HighestObjectPlanner())
    sampler = CandidateSampler(mix, settings.camera.intrinsics, planner=policy, generator=torch.Generator().manual_seed(args.seed))
    config = SynthConfig(
        out=args.out, grasps=args.grasps, shard_size=args.shard_size, attempts_per_env=args.attempts_per_env,
        seed=args.seed, time_budget_s=args.time_budget, stream=args.stream,
    )
    meta = {"object_set": settings.objects.object_set, "mix": args.mix, "envs": settings.num_envs,
            "device": settings.device, "overrides": list(args.overrides), "stream": args.stream}
    return synthesize(runner, sampler, config, meta, rank)
