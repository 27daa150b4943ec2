"""``dexrl bench planner``: FC-GQ-CNN planning speed per 386x516 image (16 depth x 16 angle bins, 2.0M grasps)
per inference path and batch size, with agreement checks against the float32 reference.

Paths (``--modes``):

- ``reference``: plain PyTorch, float32, every depth bin through the whole network, the whole image;
- ``fp32`` / ``tf32`` / ``bf16``: plain PyTorch with conv1_1 shared across depth bins and only the mask's
  bounding box evaluated, in float32, TensorFloat-32 (CUDA only) or bfloat16 after conv1_1;
- ``fast``: the fast path (:mod:`dexrl.gqcnn.fast`; the default): bfloat16 trunk (float32 on CPUs that would
  emulate bfloat16) in groups of images through CUDA graphs, the best ``--rescore-top`` (depth bin, cell)
  pairs per image rescored in float32; on CUDA, batches of up to 16 images as one CUDA graph of the whole
  plan (``PlannerOptions.whole_plan_images``);
- ``fast-stepwise``: the fast path planned step by step at every batch (no whole-plan graph), for comparison;
- ``fast-compiled``: the same with the trunk under ``torch.compile`` (tens of seconds per group shape).

``--fc3 conv|fft|rows|triton`` picks how the fast paths compute fc3: a direct convolution, float32 FFTs, a 17x1
convolution over unfolded rows, or one Triton kernel for fc3 to the softmax (CUDA only) (default: triton for
``fast`` on CUDA, rows for ``fast-compiled``, fft on CPUs; each row of the JSON names the one it used);
``--stream-convs torch|triton`` the image stream after conv1_1 (PyTorch's, or Triton kernels with the ReLUs and
pools fused; default: triton for ``fast`` on CUDA, torch otherwise); ``--group-images`` their images per
network pass (default 16).

Times are whole ``plan()`` calls (validation, inpainting, depth bins, network, rescoring, top-k selection;
CUDA synchronised) as median and minimum ms per image, and images/s. The plain paths evaluate a batch in one
pass and are timed at batches up to 64 only (beyond, their activations outgrow the GPU).
Agreement with the reference over the distinct images (:func:`dexrl.gqcnn.agreement.agreement`, top 5
grasps): the share whose top grasp (cell, angle bin, depth bin) is the reference's, the largest |q - reference
q| of the returned grasps, the largest regret (reference best q minus the reference's q of the grasp chosen),
and the worst rank of the reference's best pair in the path's own map before rescoring.

Images: synthetic bins (PhoXi S camera) with a bin-interior mask, or ``--depth-npz FILE`` with arrays
``depth`` (B, H, W) float32 [m] and ``mask`` (B, H, W) bool, optionally ``intrinsics`` (4,) or (B, 4) as fx,
fy, cx, cy [px] (default: the PhoXi S for 386x516, else fx = fy = 552.5 with the centre at the image centre).
Batches larger than the distinct images repeat them. Without ``--weights`` the network has seeded random
weights, fc5 scaled so q spreads over (0, 1) instead of saturating; trained weights give peakier maps.

On CPUs, glibc hands the large activation buffers back to the kernel after every pass and page-faults them in
again on the next; the planner now keeps them (:func:`dexrl.allocator.keep_freed_memory`), which took the
fast path from about 1.0 to 0.58-0.62 s per image on a 2-core VM (the figures of 2026-11-25 set the same
through ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment).

Top-level imports stay light: ``dexrl bench`` imports every target's module to build its help.
"""

from __future__ import annotations

import argparse

__all__ = ["bin_images", "configure", "load_npz_images", "run"]

MODES = ("reference", "fp32", "tf32", "bf16", "fast", "fast-stepwise", "fast-compiled")
PLAIN_MAX_BATCH = 64
TARGET_GPU_MS, TARGET_CPU_MS, TARGET_AGREEMENT = 1.0, 400.0, 0.99
GOAL_IMAGES_PER_S, FLOOR_IMAGES_PER_S = 3000.0, 1000.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="batch sizes (default: 1 on cpu, 1 64 1024 on cuda)",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="timed calls per mode and batch (default: 3 on cpu; on cuda 200 at batch 1, whose host time "
        "varies from call to call, 5 up to 64, else 3)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=None,
        help="paths to time (default: reference tf32 fast fast-compiled on cuda, reference fp32 fast on cpu)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="distinct synthetic images for timing and agreement (default: 4 on cpu, 64 on cuda)",
    )
    parser.add_argument(
        "--depth-npz",
        default=None,
        help="plan on these images instead: arrays depth (B,H,W) and mask (B,H,W)",
    )
    parser.add_argument(
        "--rescore-top",
        type=int,
        default=16,
        help="fast paths: pairs per image rescored in float32 (default 16)",
    )
    parser.add_argument(
        "--group-images",
        type=int,
        default=16,
        help="fast paths: images per network pass (default 16; about 0.4 GB of GPU memory per image)",
    )
    parser.add_argument(
        "--fc3",
        choices=("conv", "fft", "rows", "triton"),
        default=None,
        help="fast paths: fc3 as a direct convolution, through FFTs, over unfolded rows, or with fc4, fc5 and "
        "the softmax as one Triton kernel (cuda only) (default: triton for fast on cuda, rows for fast-compiled, "
        "fft on cpu)",
    )
    parser.add_argument(
        "--stream-convs",
        choices=("torch", "triton"),
        default=None,
        help="fast paths: the image stream after conv1_1 as PyTorch convolutions or as Triton kernels with "
        "the ReLUs and pools fused (cuda only; default: triton for fast on cuda, else torch)",
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


def load_npz_images(path: str):
    """Depth (B, H, W) float32 [m], masks (B, H, W) bool and one camera per image from an NPZ file (see the
    module docstring for its arrays)."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S, CameraIntrinsics  # noqa: PLC0415

    arrays = np.load(path)
    depth = torch.from_numpy(np.asarray(arrays["depth"], dtype=np.float32))
    mask = torch.from_numpy(np.asarray(arrays["mask"], dtype=bool))
    if depth.dim() != 3 or mask.shape != depth.shape:
        raise ValueError(
            f"{path}: expected depth and mask of one shape (B, H, W), got {depth.shape}, {mask.shape}"
        )
    count, height, width = depth.shape
    if "intrinsics" in arrays:
        values = np.broadcast_to(np.asarray(arrays["intrinsics"], dtype=float), (count, 4))
        cameras = [
            CameraIntrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)
            for fx, fy, cx, cy in values
        ]
    elif (height, width) == (PHOXI_S.height, PHOXI_S.width):
        cameras = [PHOXI_S] * count
    else:
        centre = CameraIntrinsics(
            fx=552.5, fy=552.5, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height
        )
        cameras = [centre] * count
    return depth, mask, cameras


def _random_network(seed: int):
    import torch  # noqa: PLC0415

    from .model import FCGQCNN  # noqa: PLC0415

    torch.manual_seed(seed)
    network = FCGQCNN()
    with torch.no_grad():
        network.fc5.weight.mul_(0.1)
    return network


def _options(
    mode: str,
    rescore_top: int,
    fc3: str | None = None,
    group_images: int = 16,
    stream_convs: str | None = None,
):
    from .policy import PlannerOptions  # noqa: PLC0415

    if mode == "reference":
        return PlannerOptions(path="plain", share_first_conv=False, crop_to_mask=False)
    if mode in ("fp32", "tf32", "bf16"):
        return PlannerOptions(path="plain", precision=mode)
    compile_mode = "max-autotune-no-cudagraphs" if mode == "fast-compiled" else None
    return PlannerOptions(
        path="fast",
        whole_plan_images=0 if mode == "fast-stepwise" else None,
        rescore_top=rescore_top,
        compile_mode=compile_mode,
        fc3=fc3,
        group_images=group_images,
        stream_convs=stream_convs,
    )


def _repeat(tensor, count: int):
    """The first ``count`` rows of ``tensor`` repeated as often as needed."""
    repeats = -(-count // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:count]


def _time(planner, depth, masks, cameras, iters: int) -> tuple[list[float], list[float]]:
    """Seconds per call and per network pass (none for whole-plan graphs, whose steps are not timed apart) of
    ``iters`` timed calls after two warm-up calls (a whole plan learns the mask's window in its first call
    and captures that window's graph in the second)."""
    import time  # noqa: PLC0415

    totals, networks = [], []
    for call in range(iters + 2):
        begin = time.perf_counter()
        result = planner.plan(depth, cameras, masks)
        elapsed = time.perf_counter() - begin  # plan() synchronises CUDA before it returns its timings
        if call >= 2:
            totals.append(elapsed)
            if "network" in result.timings:
                networks.append(result.timings["network"])
    return totals, networks


def run(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    import statistics  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from dexrl.grasp import PHOXI_S  # noqa: PLC0415

    from . import load_planner  # noqa: PLC0415
    from .agreement import agreement  # noqa: PLC0415
    from .policy import FCGQCNNPlanner  # noqa: PLC0415

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batch or ([1, 64, 1024] if cuda else [1])
    modes = args.modes or (
        ["reference", "tf32", "fast", "fast-compiled"] if cuda else ["reference", "fp32", "fast"]
    )
    if not cuda and "tf32" in modes:
        print("tf32 needs CUDA; skipped")
        modes = [m for m in modes if m != "tf32"]
    if args.depth_npz:
        depth, masks, cameras = load_npz_images(args.depth_npz)
        source = args.depth_npz
    else:
        depth, masks = bin_images(args.images or (64 if cuda else 4), args.seed)
        cameras, source = [PHOXI_S] * depth.shape[0], "synthetic bins"
    depth, masks = depth.to(device), masks.to(device)
    network = None if args.weights else _random_network(args.seed)
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    count, height, width = depth.shape
    print(
        f"FC-GQ-CNN planner on {device_name}: {count} images {height}x{width} ({source}), "
        "16 depth x 16 angle "
        f"bins, weights: {args.weights or 'random (seeded)'}"
    )

    def planner_for(mode: str) -> FCGQCNNPlanner:
        options = _options(mode, args.rescore_top, args.fc3, args.group_images, args.stream_convs)
        if network is None:
            return load_planner(args.weights, str(device), options)
        return FCGQCNNPlanner(network, device, options)

    def write_json(verdicts: list[str]) -> None:
        if not args.json:
            return
        record = {
            "device": device_name,
            "torch": torch.__version__,
            "images": count,
            "image_size": [height, width],
            "source": source,
            "weights": args.weights or "random (seeded)",
            "seed": args.seed,
            "rescore_top": args.rescore_top,
            "group_images": args.group_images,
            "target_ms_per_image_batch1": TARGET_GPU_MS if cuda else TARGET_CPU_MS,
            "rows": rows,
            "verdicts": verdicts,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))

    reference = planner_for("reference")
    check_batch = min(16, count)
    rows = []
    header = (
        f"{'mode':<14}{'batch':>6}{'ms/image':>10}{'min':>9}{'network':>9}{'images/s':>10}"
        f"{'top-1 same':>12}{'max |dq|':>10}{'max regret':>12}{'max rank':>10}"
    )
    print(header)
    print("-" * len(header))
    for mode in modes:
        planner = reference if mode == "reference" else planner_for(mode)
        plain = not mode.startswith("fast")
        timed = []
        # timed before the agreement check: a compiled trunk then meets its largest window first and compiles
        # fewer shapes (its shapes only grow, fast.TrunkShapes)
        for batch in sorted(batches, reverse=True):
            if cuda and plain and batch > PLAIN_MAX_BATCH:
                continue
            iters = args.iters or (3 if not cuda else 200 if batch == 1 else 5 if batch <= 64 else 3)
            totals, networks = _time(
                planner, _repeat(depth, batch), _repeat(masks, batch), (cameras * batch)[:batch], iters
            )
            timed.append((batch, totals, networks))
            print(f"  {mode} at batch {batch}: {batch / statistics.median(totals):.1f} images/s", flush=True)
        checked = (
            {"top1_same": 1.0, "max_abs_dq": 0.0, "max_regret": 0.0, "max_rank_of_reference_top": 0}
            if mode == "reference"
            else agreement(planner, reference, depth, masks, cameras, k=5, batch=check_batch).summary()
        )
        for batch, totals, networks in sorted(timed):
            per_image = [1000 * t / batch for t in totals]
            row = {
                "mode": mode,
                "batch": batch,
                "ms_per_image_median": statistics.median(per_image),
                "ms_per_image_min": min(per_image),
                "network_ms_per_image": 1000 * statistics.median(networks) / batch if networks else None,
                "images_per_s": 1000 / statistics.median(per_image),
                "fc3": None if plain else planner.options.fc3,
                "stream_convs": None if plain else planner.options.stream_convs,
                **checked,
            }
            rows.append(row)
            print(
                f"{mode:<14}{batch:>6}{row['ms_per_image_median']:>10.2f}{row['ms_per_image_min']:>9.2f}"
                f"{_ms(row['network_ms_per_image']):>9}{row['images_per_s']:>10.1f}"
                f"{checked['top1_same']:>12.1%}"
                f"{checked['max_abs_dq']:>10.2e}{checked['max_regret']:>12.2e}"
                f"{checked['max_rank_of_reference_top']:>10d}"
            )
            write_json(_verdicts(rows, cuda))  # after every row: a run cut short keeps what it measured
    verdicts = _verdicts(rows, cuda)
    for line in verdicts:
        print(line)
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _verdicts(rows: list[dict], cuda: bool) -> list[str]:
    """The targets, judged on paths whose top grasp agrees with the reference on enough images."""
    agreeing = [r for r in rows if r["top1_same"] >= TARGET_AGREEMENT]
    lines = []
    target = TARGET_GPU_MS if cuda else TARGET_CPU_MS
    fastest = min(
        (r for r in agreeing if r["batch"] == 1), default=None, key=lambda r: r["ms_per_image_median"]
    )
    if fastest:
        verdict = "meets" if fastest["ms_per_image_median"] <= target else "misses"
        lines.append(
            f"batch 1, >= {TARGET_AGREEMENT:.0%} top-1 agreement: fastest {fastest['mode']} "
            f"{fastest['ms_per_image_median']:.2f} ms/image; {verdict} the {target:g} ms target"
        )
    best = max(agreeing, default=None, key=lambda r: r["images_per_s"])
    if best and cuda:
        verdict = (
            "meets the goal"
            if best["images_per_s"] >= GOAL_IMAGES_PER_S
            else "meets the floor"
            if best["images_per_s"] >= FLOOR_IMAGES_PER_S
            else "misses the floor"
        )
        lines.append(
            f"throughput, >= {TARGET_AGREEMENT:.0%} top-1 agreement: best {best['mode']} at batch "
            f"{best['batch']}: {best['images_per_s']:.0f} images/s; {verdict} ({GOAL_IMAGES_PER_S:.0f} goal, "
            f"{FLOOR_IMAGES_PER_S:.0f} floor)"
        )
    return lines
