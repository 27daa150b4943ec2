"""``dexrl reach``: where the Franka arm can grasp top-down in the bin (batched IK over a grid of the interior).

Writes ``reach.png`` (one panel per TCP height above the floor over the bin and a margin around it, the bin's
interior outlined in white; cells from red, no jaw yaw reachable, to green, every yaw of [-90, 90) degrees
reachable; the arm stands at the left) and ``reach.json`` (the fractions).
Kinematic only: a wrist touching a wall on the way down is the executor's collision outcome, not shown here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spacing", type=float, default=0.025, help="grid spacing [m] (default 0.025)")
    parser.add_argument("--margin", type=float, default=0.2, help="grid reach beyond the bin's inner walls [m] (default 0.2)")
    parser.add_argument("--heights", type=float, nargs="+", default=[0.01, 0.06, 0.17],
                        help="TCP heights above the bin floor [m] (default 0.01 0.06 0.17)")
    parser.add_argument("--yaws", type=int, default=8, help="jaw yaws sampled over [-90, 90) degrees (default 8)")
    parser.add_argument("--out", type=Path, default=Path("out/reach"), help="output folder (default out/reach)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="scene overrides, e.g. franka.base_position=[-0.5,0,0]")


def run(args: argparse.Namespace) -> int:
    if args.spacing <= 0 or args.yaws < 1:
        raise SystemExit("dexrl reach: --spacing must be > 0 and --yaws >= 1")
    from PIL import Image  # noqa: PLC0415

    from dexrl.sim.gripper import GripperCfg  # noqa: PLC0415
    from dexrl.sim.grasp_runner import ASSET_DIR  # noqa: PLC0415
    from dexrl.sim.reachability import reach_map, reach_picture  # noqa: PLC0415
    from dexrl.sim.settings import load_scene_settings  # noqa: PLC0415

    settings = load_scene_settings(args.overrides, device="cpu", embodiment="franka")
    reach = reach_map(settings, GripperCfg(), ASSET_DIR / "gripper", args.spacing, args.margin, tuple(args.heights), args.yaws)
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(reach_picture(reach, settings.bin.interior_size)).save(args.out / "reach.png")
    figures = {"base_position_m": list(settings.franka.base_position), **reach.as_dict()}
    (args.out / "reach.json").write_text(json.dumps(figures))
    inside = (abs(reach.xs)[None, :] <= settings.bin.interior_size[0] / 2) & (abs(reach.ys)[:, None] <= settings.bin.interior_size[1] / 2)
    figures["bin_interior_reachable_fraction_per_height"] = [round(float(f[inside].mean()), 4) for f in reach.fraction]
    for height, grid, interior in zip(args.heights, figures["reachable_fraction_per_height"], figures["bin_interior_reachable_fraction_per_height"]):
        print(f"  TCP {height * 100:5.1f} cm above the floor: bin interior {interior:.1%}, whole grid {grid:.1%} of (cell, yaw) poses reachable")
    print(f"wrote {args.out / 'reach.png'} and {args.out / 'reach.json'}")
    return 0
