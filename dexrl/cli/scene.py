"""``dexrl scene``: build, randomize and settle bins; write per env a depth ``.npy``, a colour-mapped depth PNG
with the bin mask outlined, and a JSON of what was drawn; or, with ``--npz``, all rounds' depth images, bin masks
and intrinsics in one ``heaps.npz`` (the input of ``dexrl bench planner --depth-npz``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--rounds", type=int, default=1, help="heaps to draw per env (default 1)")
    parser.add_argument("--out", type=Path, default=Path("out/scene"), help="output folder (default out/scene)")
    parser.add_argument(
        "--npz", action="store_true", help="write OUT/heaps.npz (depth, mask, intrinsics of every heap) instead of per-env files"
    )


def run(args: argparse.Namespace) -> int:
    from dexrl.sim.scene_io import write_heaps_npz, write_scene_round  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.sim.world_factory import make_world  # noqa: PLC0415

    settings = scene_settings_from_args(args)
    world = make_world(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    heaps = []
    for round_index in range(args.rounds):
        info, seconds = world.timed_round()
        settled = int(info.settled.sum())
        if args.npz:
            depth = world.render_depth()
            heaps.append((depth, world.bin_mask(depth)))
            wrote = "rendered"
        else:
            wrote = f"wrote {len(write_scene_round(world, info, args.out, round_index))} files to {args.out}"
        print(
            f"round {round_index}: {world.num_envs} envs settled {settled}/{world.num_envs} in {seconds:.2f} s wall "
            f"(simulated {info.settle_time.max().item():.2f} s); {wrote}"
        )
    if heaps:
        path = write_heaps_npz(args.out / "heaps.npz", heaps, settings.camera.intrinsics)
        print(f"wrote {sum(len(depth) for depth, _ in heaps)} heaps to {path}")
    return 0
