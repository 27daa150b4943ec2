"""``dexrl scene``: build, randomize and settle bins; write per env a depth ``.npy``, a colour-mapped depth PNG
with the bin mask outlined, and a JSON of what was drawn."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--rounds", type=int, default=1, help="heaps to draw per env (default 1)")
    parser.add_argument("--out", type=Path, default=Path("out/scene"), help="output folder (default out/scene)")


def run(args: argparse.Namespace) -> int:
    from dexrl.sim.scene_io import write_scene_round  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.sim.world_factory import make_world  # noqa: PLC0415

    settings = scene_settings_from_args(args)
    world = make_world(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    for round_index in range(args.rounds):
        info, seconds = world.timed_round()
        files = write_scene_round(world, info, args.out, round_index)
        settled = int(info.settled.sum())
        print(
            f"round {round_index}: {world.num_envs} envs settled {settled}/{world.num_envs} in {seconds:.2f} s wall "
            f"(simulated {info.settle_time.max().item():.2f} s); wrote {len(files)} files to {args.out}"
        )
    return 0
