"""``dexrl plan``: plan grasps on one depth image with FC-GQ-CNN; write the q-map overlay PNG (the top-k
grasps drawn as jaw glyphs, coloured by q) and a JSON of the grasps."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depth", type=Path, required=True, help="depth image .npy, (H, W) float metres, 0 = missing"
    )
    parser.add_argument(
        "--mask", type=Path, default=None, help="where grasp centres may lie: .npy (bool) or .png (non-zero)"
    )
    parser.add_argument(
        "--intrinsics",
        type=Path,
        default=None,
        help="camera JSON {fx, fy, cx, cy, width, height} (default PhoXi S, 516x386)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="FC-GQ-CNN weights .safetensors (default: the shipped ones)",
    )
    parser.add_argument("--k", type=int, default=10, help="grasps to return (default 10)")
    parser.add_argument(
        "--min-distance",
        type=float,
        default=0.0,
        help="minimum distance between returned grasps [px] (default 0)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument("--out", type=Path, default=Path("out/plan"), help="output folder (default out/plan)")


def _load_mask(path: Path):
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    if path.suffix == ".npy":
        return np.load(path).astype(bool)
    return np.asarray(Image.open(path).convert("L")) > 0


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from dexrl.gqcnn import PlannerOptions, load_planner  # noqa: PLC0415
    from dexrl.gqcnn.grid import CROP_SIZE, STRIDE  # noqa: PLC0415
    from dexrl.grasp import PHOXI_S, CameraIntrinsics, PlannerError  # noqa: PLC0415
    from dexrl.grasp.draw import plan_picture  # noqa: PLC0415

    depth = np.load(args.depth).astype(np.float32)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        print(
            f"dexrl plan: {args.depth} holds an array of shape {depth.shape}, expected one (H, W) image",
            file=sys.stderr,
        )
        return 1
    mask = None if args.mask is None else _load_mask(args.mask)
    camera = (
        PHOXI_S
        if args.intrinsics is None
        else CameraIntrinsics.from_dict(json.loads(args.intrinsics.read_text()))
    )
    try:
        planner = load_planner(args.weights, args.device, PlannerOptions(min_distance_px=args.min_distance))
        result = planner.plan(
            torch.from_numpy(depth)[None],
            camera,
            None if mask is None else torch.from_numpy(mask)[None],
            k=args.k,
            return_q_map=True,
        )
    except (FileNotFoundError, PlannerError) as error:
        print(f"dexrl plan: {error}", file=sys.stderr)
        return 1
    valid = result.valid[0].cpu().numpy()
    grasps = result.grasps[0].to("cpu")
    centers, angles, depths = (
        grasps.center.numpy()[valid],
        grasps.angle.numpy()[valid],
        grasps.depth.numpy()[valid],
    )
    q, widths = grasps.q.numpy()[valid], grasps.width.numpy()[valid]
    picture = plan_picture(
        depth,
        result.q_map[0].cpu().numpy(),
        centers,
        angles,
        widths * camera.fx / depths,
        q,
        stride=STRIDE,
        offset=CROP_SIZE // 2,
        mask=mask,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    png, record_path = args.out / f"{args.depth.stem}_plan.png", args.out / f"{args.depth.stem}_grasps.json"
    Image.fromarray(picture).save(png)
    positions = result.positions_cam[0].cpu().numpy()[valid]
    record = {
        "depth": args.depth.name,
        "weights": str(args.weights) if args.weights else "shipped default",
        "provenance": planner.card.provenance if planner.card else None,
        "intrinsics": camera.to_dict(),
        "timings_s": result.timings,
        "grasps": [
            {
                "rank": i,
                "center_px": centers[i].tolist(),
                "angle_rad": float(angles[i]),
                "depth_m": float(depths[i]),
                "width_m": float(widths[i]),
                "q": float(q[i]),
                "position_cam_m": positions[i].tolist(),
            }
            for i in range(len(q))
        ],
    }
    record_path.write_text(json.dumps(record, indent=2))
    print(f"{len(q)} grasps, best q = {q[0]:.3f} at {centers[0].tolist()} px; wrote {png} and {record_path}")
    return 0
