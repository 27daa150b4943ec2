"""``dexrl bench planner``: FC-GQ-CNN planning time per 386x516 image (16 depth x 16 angle bins, 2.0M grasps)
per inference path and batch size, with agreement checks against the float32 reference.

Paths (``--modes``):

- ``reference``: float32, every depth bin through the whole network, the whole image (the naive version);
- ``fp32``: conv1_1 shared across depth bins (exact by linearity) and only the mask's bounding box evaluated;
- ``tf32``: as fp32 with TensorFloat-32 convolutions (CUDA only);
- ``bf16``: as fp32 with bfloat16 after conv1_1 and channels-last tensors;
- ``bf16-compiled``: bf16 under ``torch.compile`` (default on CUDA, on request on CPUs; compiling takes tens
  of seconds per batch size).

Times are whole ``plan()`` calls (inpainting, depth bins, network, top-k selection; CUDA synchronised), as
median and minimum ms per image. Agreement with the reference, over all images: the share whose top grasp
(cell, angle bin, depth bin) is the reference's, the largest difference of the top grasp's q, and the largest
regret (the reference's best q minus the reference's q of the grasp chosen; near-ties make "same" fail at no
cost). Images are synthetic bins (PhoXi S camera) with a bin-interior mask. Without ``--weights`` the network
has seeded random weights, fc5 scaled so q spreads over (0, 1) instead of saturating; trained weights give
peakier maps.

On CPUs, glibc hands the large activation buffers back to the kernel after every pass and page-faults them in
again on the next; keeping them (``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736`` in
the environment, or jemalloc / tcmalloc) took bf16 from 0.63 to 0.49 s per image on a 2-core CPU.

Top-level imports stay light: ``dexrl bench`` imports every target's module to build its help.
"""

from __future__ import annotations

import argparse

__all__ = ["configure", "run"]

MODES = ("reference", "fp32", "tf32", "bf16", "bf16-compiled")
TARGET_GPU_MS, TARGET_CPU_MS, TARGET_AGREEMENT = 1.0, 400.0, 0.99


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=None, help="batch sizes (default: 1 on cpu, 1 8 32 on cuda)"
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="timed calls per mode and batch (default: 3 on cpu, 20 on cuda)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=None,
        help="paths to time (default: all that the device supports, compiled only on cuda)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="distinct images for timing and agreement (default: 4 on cpu, 64 on cuda)",
    )
    parser.add_argument(
        "--weights", default=None, help="FC-GQ-CNN weights file (default: seeded random weights)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the images and random weights (default 0)"
    )
    parser.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")


def bin_images(count: int, seed: int):
    """(count, 386, 516) float32 depth [m] of heaps in the DexRL scene's bin (interior 0.40 x 0.30 m, walls
    0.12 m high) seen by a PhoXi S 0.60 m above the floor, and the bin-interior masks (count, 386, 516) bool.
    Boxes and cylinders 2-10 cm tall, 0.5 mm noise, a few missing patches."""
    import math  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S  # noqa: PLC0415

    generator = torch.Generator().manual_seed(seed)
    camera, floor = PHOXI_S, 0.60
    rows = torch.arange(camera.height, dtype=torch.float32)[:, None]
    cols = torch.arange(camera.width, dtype=torch.float32)[None, :]
    half_u, half_v = 0.20 * camera.fx / floor, 0.15 * camera.fy / floor  # 184 x 138 px
    interior = ((cols - camera.cx).abs() < half_u) & ((rows - camera.cy).abs() < half_v)
    wall = ((cols - camera.cx).abs() < half_u + 10) & ((rows - camera.cy).abs() < half_v + 10) & ~interior
    depth = torch.full((count, camera.height, camera.width), floor)
    depth[:, wall] = floor - 0.12

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    for image in depth:
        for _ in range(int(uniform(5, 13))):
            u, v = (
                uniform(camera.cx - half_u + 20, camera.cx + half_u - 20),
                uniform(camera.cy - half_v + 20, camera.cy + half_v - 20),
            )
            top, size_u, size_v, angle = (
                floor - uniform(0.02, 0.10),
                uniform(12, 45),
                uniform(12, 45),
                uniform(0, math.pi),
            )
            du, dv = cols - u, rows - v
            along = du * math.cos(angle) + dv * math.sin(angle)
            across = -du * math.sin(angle) + dv * math.cos(angle)
            box = (along.abs() < size_u) & (across.abs() < size_v)
            shape = box if uniform(0, 1) < 0.5 else (du**2 + dv**2 < size_u**2)
            image[shape] = torch.clamp(image[shape], max=top)
        for _ in range(3):
            u, v = (
                int(uniform(camera.cx - half_u, camera.cx + half_u)),
                int(uniform(camera.cy - half_v, camera.cy + half_v)),
            )
            image[v : v + 6, u : u + 10] = 0.0
    noise = 0.0005 * torch.randn(depth.shape, generator=generator)
    depth = torch.where(depth > 0, depth + noise, depth)
    return depth, interior.expand(count, camera.height, camera.width).clone()


def _random_network(seed: int):
    import torch  # noqa: PLC0415

    from .model import FCGQCNN  # noqa: PLC0415

    torch.manual_seed(seed)
    network = FCGQCNN()
    with torch.no_grad():
        network.fc5.weight.mul_(0.1)
    return network


def _options(mode: str, device_type: str):
    from .policy import PlannerOptions  # noqa: PLC0415

    if mode == "reference":
        return PlannerOptions(share_first_conv=False, crop_to_mask=False)
    if mode in ("fp32", "tf32"):
        return PlannerOptions(precision=mode)
    compile_mode = "max-autotune-no-cudagraphs" if device_type == "cuda" else "default"
    return PlannerOptions(
        precision="bf16", channels_last=True, compile_mode=compile_mode if mode == "bf16-compiled" else None
    )


def _evaluate_all(planner, depth, masks, camera, batch: int):
    """Every grasp's q (N, D, A, h, w) and the admissible cells (N, h, w), on the CPU, ``batch`` at a time."""
    import torch  # noqa: PLC0415

    qs, admissible = [], []
    for start in range(0, depth.shape[0], batch):
        quality = planner.evaluate(depth[start : start + batch], camera, masks[start : start + batch])
        qs.append(quality.q.cpu())
        admissible.append(quality.admissible.cpu())
    return torch.cat(qs), torch.cat(admissible)


def _top_grasps(q, admissible):
    """Per image, the best admissible grasp's (depth bin, angle bin, row, column) (N, 4) and its q (N,)."""
    import torch  # noqa: PLC0415

    values, flat = torch.where(admissible[:, None, None], q, -1.0).flatten(1).max(dim=1)
    return torch.stack(torch.unravel_index(flat, q.shape[1:]), dim=1), values


def _time(planner, depth, masks, camera, batch: int, iters: int) -> tuple[list[float], list[float]]:
    """Seconds per call and per network pass of ``iters`` timed calls after one warm-up call."""
    import time  # noqa: PLC0415

    totals, networks = [], []
    for call in range(iters + 1):
        start = (call * batch) % max(1, depth.shape[0] - batch + 1)
        begin = time.perf_counter()
        result = planner.plan(depth[start : start + batch], camera, masks[start : start + batch])
        elapsed = time.perf_counter() - begin  # plan() synchronises CUDA before it returns its timings
        if call:
            totals.append(elapsed)
            networks.append(result.timings["network"])
    return totals, networks


def run(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    import statistics  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S  # noqa: PLC0415

    from . import load_planner  # noqa: PLC0415
    from .policy import FCGQCNNPlanner  # noqa: PLC0415

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batch or ([1, 8, 32] if cuda else [1])
    iters = args.iters or (20 if cuda else 3)
    modes = args.modes or [m for m in MODES if cuda or m not in ("tf32", "bf16-compiled")]
    if not cuda and "tf32" in modes:
        print("tf32 needs CUDA; skipped")
        modes = [m for m in modes if m != "tf32"]
    depth, masks = bin_images(max(args.images or (64 if cuda else 4), max(batches)), args.seed)
    depth, masks = depth.to(device), masks.to(device)
    network = None if args.weights else _random_network(args.seed)
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"FC-GQ-CNN planner on {device_name}: {depth.shape[0]} images 386x516, 16 depth x 16 angle bins, "
        f"weights: {args.weights or 'random (seeded)'}"
    )

    def planner_for(mode: str) -> FCGQCNNPlanner:
        if network is None:
            return load_planner(args.weights, str(device), _options(mode, device.type))
        return FCGQCNNPlanner(network, device, _options(mode, device.type))

    chunk = max(batches)
    reference_q, admissible = _evaluate_all(planner_for("reference"), depth, masks, PHOXI_S, chunk)
    reference_indices, reference_best = _top_grasps(reference_q, admissible)
    rows = []
    header = (
        f"{'mode':<14}{'batch':>6}{'ms/image':>10}{'min':>9}{'network':>10}{'images/s':>10}"
        f"{'top-1 same':>12}{'max |dq|':>10}{'max regret':>12}"
    )
    print(header)
    print("-" * len(header))
    for mode in modes:
        planner = planner_for(mode)
        indices, best = _top_grasps(_evaluate_all(planner, depth, masks, PHOXI_S, chunk)[0], admissible)
        same = (indices == reference_indices).all(dim=1).double().mean().item()
        dq = (best - reference_best).abs().max().item()
        regret = (reference_best - reference_q[(torch.arange(len(indices)), *indices.T)]).max().item()
        for batch in batches:
            totals, networks = _time(planner, depth, masks, PHOXI_S, batch, iters)
            per_image = [1000 * t / batch for t in totals]
            row = {
                "mode": mode,
                "batch": batch,
                "ms_per_image_median": statistics.median(per_image),
                "ms_per_image_min": min(per_image),
                "network_ms_per_image": 1000 * statistics.median(networks) / batch,
                "images_per_s": 1000 / statistics.median(per_image),
                "top1_same": same,
                "top1_max_abs_dq": dq,
                "top1_max_regret": regret,
            }
            rows.append(row)
            print(
                f"{mode:<14}{batch:>6}{row['ms_per_image_median']:>10.1f}{row['ms_per_image_min']:>9.1f}"
                f"{row['network_ms_per_image']:>10.1f}{row['images_per_s']:>10.1f}"
                f"{same:>12.1%}{dq:>10.2e}{regret:>12.2e}"
            )
    target = TARGET_GPU_MS if cuda else TARGET_CPU_MS
    fastest = min(
        (r for r in rows if r["batch"] == 1 and r["top1_same"] >= TARGET_AGREEMENT),
        default=None,
        key=lambda r: r["ms_per_image_median"],
    )
    if fastest:
        verdict = "meets" if fastest["ms_per_image_median"] <= target else "misses"
        print(
            f"fastest path at batch 1 with >= {TARGET_AGREEMENT:.0%} top-1 agreement: {fastest['mode']} "
            f"{fastest['ms_per_image_median']:.1f} ms/image; {verdict} the {target:g} ms target"
        )
    if args.json:
        record = {
            "device": device_name,
            "torch": torch.__version__,
            "images": depth.shape[0],
            "iters": iters,
            "weights": args.weights or "random (seeded)",
            "seed": args.seed,
            "target_ms_per_image": target,
            "rows": rows,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.json}")
    return 0
