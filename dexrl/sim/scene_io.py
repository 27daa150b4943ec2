"""Write rounds of the bin scene to files: per env a depth ``.npy``, a depth PNG with the mask outlined and a
JSON record, or all heaps in one NPZ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dexrl.grasp import CameraIntrinsics

from .bin_world import BinWorld, RoundInfo
from .outputs import write_depth_png, write_json

__all__ = ["round_records", "write_heaps_npz", "write_scene_round"]


def round_records(world: BinWorld, info: RoundInfo) -> list[dict]:
    """One JSON-ready record per env: camera, settle time and every placed object with its draws."""
    positions = world.object_positions().cpu()
    k = world.settings.camera.intrinsics
    records = []
    for env in range(world.num_envs):  # output only, not the simulation loop
        placed = info.placed[env].nonzero().flatten().tolist()
        records.append(
            {
                "env": env,
                "seed": world.settings.seed,
                "settled": bool(info.settled[env]),
                "settle_time_s": round(float(info.settle_time[env]), 4),
                "camera": {
                    "intrinsics": k.to_dict(),
                    "position_m": world.extrinsics.position[env].tolist(),
                    "rotation_cam_to_world": world.extrinsics.rotation[env].tolist(),
                },
                "objects": [
                    {
                        "slot": slot,
                        "name": world.pool[slot].name,
                        "mass_kg": round(float(info.mass[env, slot]), 5),
                        "static_friction": round(float(info.static_friction[env, slot]), 4),
                        "dynamic_friction": round(float(info.dynamic_friction[env, slot]), 4),
                        "restitution": round(float(info.restitution[env, slot]), 4),
                        "position_m": [round(float(v), 5) for v in positions[env, slot]],
                    }
                    for slot in placed
                ],
            }
        )
    return records


def write_scene_round(world: BinWorld, info: RoundInfo, out: Path, round_index: int = 0) -> list[Path]:
    """Render the settled bins and write three files per env; returns the paths written."""
    depth = world.render_depth()
    mask = world.bin_mask(depth)
    depth_np, mask_np = depth.cpu().numpy(), mask.cpu().numpy()
    written = []
    for record in round_records(world, info):
        stem = out / f"round{round_index:03d}_env{record['env']:04d}"
        np.save(stem.with_name(stem.name + "_depth.npy"), depth_np[record["env"]])
        np.save(stem.with_name(stem.name + "_mask.npy"), mask_np[record["env"]])
        write_depth_png(stem.with_name(stem.name + "_depth.png"), depth_np[record["env"]], mask_np[record["env"]])
        write_json(stem.with_suffix(".json"), record)
        written += [stem.with_name(stem.name + s) for s in ("_depth.npy", "_mask.npy", "_depth.png")] + [stem.with_suffix(".json")]
    return written


def write_heaps_npz(path: Path, heaps: list[tuple[torch.Tensor, torch.Tensor]], intrinsics: CameraIntrinsics) -> Path:
    """One NPZ of rendered heaps: ``depth`` (B, H, W) float32 [m], ``mask`` (B, H, W) bool and ``intrinsics``
    (fx, fy, cx, cy), from (depth, mask) pairs of (N, H, W) each; the format ``dexrl bench planner --depth-npz``
    reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        depth=torch.cat([depth for depth, _ in heaps]).cpu().numpy().astype(np.float32),
        mask=torch.cat([mask for _, mask in heaps]).cpu().numpy(),
        intrinsics=np.array([intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy]),
    )
    return path
