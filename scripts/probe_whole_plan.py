"""Where a small-batch plan's time goes on a GPU: the whole-plan CUDA graph's replay alone (device time, CUDA
events) against the whole ``plan()`` call (host time: request checks, input copies, replay, the one
synchronisation, output copies), per batch, plus the trunk alone on the plan's window of cells (eager, and as
a graph) and on the whole grid (as a graph), and the whole plan without rescoring (as a graph). Synthetic
bins, random seeded weights, defaults otherwise. With ``--profile``, the GPU kernels of five eager passes of the
same work per batch, largest total first, and the operators with their input shapes (which step each kernel
serves). With ``--host-profile``, Python's profile of plan() calls. Writes ``whole_plan.json`` (with the
Triton kernels' autotuned configurations), ``whole_plan_profile_B.txt`` and ``host_profile_B.txt`` to
``$OUT``.

    PYTHONPATH=. python3 scripts/probe_whole_plan.py [--batch 1 16] [--rescore-top 16] [--reps 50] [--profile]
        [--host-profile] [--no-fuse]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import time
from pathlib import Path

import torch

from dexrl.gqcnn.bench import _options, _random_network, bin_images
from dexrl.gqcnn import fast
from dexrl.gqcnn.fast import GraphReplayer
from dexrl.gqcnn.policy import FCGQCNNPlanner
from dexrl.grasp import PHOXI_S, camera_parameters


def _device_ms(call, reps: int) -> float:
    """Median device time of ``call`` [ms] (CUDA events around each call)."""
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        call()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def _host_ms(call, reps: int) -> float:
    times = []
    for _ in range(reps):
        begin = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - begin))
    return statistics.median(times)


@torch.inference_mode()  # the graph's static inputs are inference tensors (plan() captured it)
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rescore-top", type=int, default=16)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--host-profile", action="store_true", help="also profile plan() calls on the host")
    parser.add_argument(
        "--no-fuse", action="store_true", help="leave the small steps eager (fast.FUSE_SMALL_STEPS = False)"
    )
    args = parser.parse_args()
    fast.FUSE_SMALL_STEPS = not args.no_fuse
    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda:0")
    torch.backends.cudnn.benchmark = True
    planner = FCGQCNNPlanner(_random_network(0), device, _options("fast", args.rescore_top))
    no_rescoring = FCGQCNNPlanner(_random_network(0), device, _options("fast", 0))
    depth, mask = bin_images(max(args.batch), 0)
    depth, mask = depth.to(device), mask.to(device)
    rows = []
    for batch in args.batch:
        images, masks, cameras = depth[:batch], mask[:batch], [PHOXI_S] * batch
        for _ in range(2):  # the first plan learns the mask's window, the second captures its graph
            planner.plan(images, cameras, masks)
        window = planner._plan_windows[tuple(images.shape)]
        replay = planner._whole_plans[(1, False, window)]
        params = camera_parameters(cameras, device)
        grasp_depth = torch.linspace(0.6, 0.7, 16, device=device).expand(batch, 16).contiguous()
        box = torch.tensor([window[0][0], window[0][1], window[1][0], window[1][1]], device=device)
        row = {
            "batch": batch,
            "window": window,
            "plan_ms": _host_ms(lambda: planner.plan(images, cameras, masks), args.reps),
            "graph_replay_device_ms": _device_ms(lambda: replay(images, masks, params), args.reps),
            "trunk_window_eager_device_ms": _device_ms(
                lambda: planner._fast.quality_whole_grid(images, grasp_depth, box, window),
                max(5, args.reps // 5),
            ),
            **_replays_in_parts(planner, no_rescoring, images, masks, cameras, box, grasp_depth, args.reps),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.host_profile:
            _host_profile(lambda: planner.plan(images, cameras, masks), out / f"host_profile_{batch}.txt")
        if args.profile:
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=activities, record_shapes=True) as profile:
                for _ in range(5):
                    planner._plan_on_device(images, masks, params, k=1, return_q_map=False, window=window)
                torch.cuda.synchronize()
            averages = profile.key_averages()
            kernels = averages.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=70)
            # operators with their input shapes tell which step a kernel belongs to
            operators = profile.key_averages(group_by_input_shape=True).table(
                sort_by="cuda_time_total", row_limit=80, max_name_column_width=40, max_shapes_column_width=70
            )
            (out / f"whole_plan_profile_{batch}.txt").write_text(kernels + "\n" + operators)
            print(operators[:12000])
    report = {
        "device": torch.cuda.get_device_name(device),
        "rescore_top": args.rescore_top,
        "fused_small_steps": fast.FUSE_SMALL_STEPS,
        "rows": rows,
    }
    (out / "whole_plan.json").write_text(
        json.dumps({**report, "triton_configs": _triton_configs()}, indent=2)
    )


def _host_profile(call, path: Path, calls: int = 500) -> None:
    """Where the host's time goes in ``calls`` calls (Python's profiler; it slows the calls down, so this
    shows shares, not times), largest own time first."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        call()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
    path.write_text(text.getvalue())


def _replays_in_parts(planner, no_rescoring, images, masks, cameras, box, grasp_depth, reps: int) -> dict:
    """Device time of graphs of parts of the pass: the whole plan without rescoring, and the trunk alone on
    the plan's window and on the whole grid (its inputs copied in first, as every graph's are)."""
    for _ in range(2):
        no_rescoring.plan(images, cameras, masks)  # learns the window, then captures its graph
    params = camera_parameters(cameras, images.device)
    window = no_rescoring._plan_windows[tuple(images.shape)]
    without = no_rescoring._whole_plans[(1, False, window)]
    trunk = planner._fast.quality_whole_grid
    on_window = GraphReplayer(functools.partial(trunk, window=window), images.device)
    whole_grid = GraphReplayer(trunk, images.device)
    on_window(images, grasp_depth, box)  # capture
    whole_grid(images, grasp_depth, box)
    return {
        "graph_replay_without_rescoring_device_ms": _device_ms(lambda: without(images, masks, params), reps),
        "graph_replay_trunk_window_device_ms": _device_ms(lambda: on_window(images, grasp_depth, box), reps),
        "graph_replay_trunk_whole_grid_device_ms": _device_ms(
            lambda: whole_grid(images, grasp_depth, box), reps
        ),
    }


def _triton_configs() -> dict[str, str]:
    """The tile (and taps per step) the autotuner chose for each Triton kernel and input size it saw."""
    from dexrl.gqcnn import triton_convs  # noqa: PLC0415 (after the planner chose its kernels)

    tuned = {
        "conv": triton_convs._tuned_conv_kernel,
        "blocks": triton_convs._tuned_block_conv_kernel,
        "head": triton_convs._tuned_head_kernel,
        "first_conv": triton_convs._tuned_first_conv_kernel,
    }
    return {
        f"{name} {key}": str(config) for name, kernel in tuned.items() for key, config in kernel.cache.items()
    }


if __name__ == "__main__":
    main()
