"""``dexrl demo``: the README's demo on the embedded default (kit-less Newton; the GPU if there is one).

Builds randomized bins of the seen object set, plans a grasp per bin with FC-GQ-CNN when its weights are
available (else the baseline planner), executes the grasps in physics, and writes to ``--out``: per env a
PNG strip (planned grasp on the depth image | the view after the lift), the planner's q-map over the first heap
with its top 5 grasps (``envNNNN_qmap.png``, FC-GQ-CNN only), the settled depth images, and ``summary.json`` with the outcome counts and the success rate with its 95% confidence interval. When the
repository ships a SAC agent, the demo ends with its result table on a few attempts: the planner alone vs the
planner + SAC (the full evaluation is ``dexrl eval``, see docs/rl.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_scene_arguments, scene_settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_scene_arguments(parser)
    parser.add_argument("--batches", type=int, default=2, help="grasp attempts per env (default 2)")
    parser.add_argument("--sac-attempts", type=int, default=8, help="attempts per arm of the SAC table (default 8; 0 skips it)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")


def run(args: argparse.Namespace) -> int:
    settings = scene_settings_from_args(args)
    from dexrl.planning import default_planner  # noqa: PLC0415
    from dexrl.sim.grasp_runner import GraspRunner  # noqa: PLC0415 (imports Isaac Lab)
    from dexrl.sim.scene_io import write_scene_round  # noqa: PLC0415
    from dexrl.sim.strips import write_attempt_strips  # noqa: PLC0415

    planner, planner_name = default_planner(settings.device)
    print(f"[demo] {settings.num_envs} bins of the {settings.objects.object_set} set on {settings.device}, planner: {planner_name}")
    runner = GraspRunner(settings, planner)
    args.out.mkdir(parents=True, exist_ok=True)
    write_scene_round(runner.world, runner.world.round, args.out)
    if _write_q_maps(runner, args.out):
        print(f"[demo] wrote the planner's q-maps (envNNNN_qmap.png) to {args.out}")
    for index in range(args.batches):
        batch = runner.attempt(render_after_lift=True)
        write_attempt_strips(batch, args.out, f"attempt{index:02d}", settings.camera.intrinsics.fx)
        print(f"[demo] attempt {index + 1}/{args.batches}: {runner.tally.summary()}")
    summary = {"planner": planner_name, "device": settings.device, "envs": settings.num_envs, "seed": settings.seed,
               "attempts": runner.tally.attempts, "outcomes": runner.tally.as_dict(),
               "heaps_redrawn_after_physics_faults": runner.world.heap_faults}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] wrote strips, depth images and summary.json to {args.out}")
    if args.sac_attempts > 0:
        _sac_table(settings, args.sac_attempts, args.out / "sac")
    return 0


def _write_q_maps(runner, out: Path) -> bool:
    """Per env, the planner's q-map over the current heap with its top 5 grasps drawn; False when the planner
    has no q-map (the baseline)."""
    from PIL import Image  # noqa: PLC0415

    from dexrl.grasp.draw import plan_picture  # noqa: PLC0415

    world = runner.world
    camera = world.settings.camera.intrinsics
    depth = world.render_depth()
    mask = world.bin_mask(depth)
    result = runner.planner.plan(depth, camera, mask, k=5, return_q_map=True)
    if result.q_map is None:
        return False
    stride, offset = result.q_map_grid
    for env in range(len(depth)):
        valid = result.valid[env].cpu().numpy()
        grasps = result.grasps[env].to("cpu")
        widths_px = grasps.width * camera.fx / grasps.depth.clamp(min=1e-3)
        picture = plan_picture(
            depth[env].cpu().numpy(), result.q_map[env].float().cpu().numpy(), grasps.center.numpy()[valid],
            grasps.angle.numpy()[valid], widths_px.numpy()[valid], grasps.q.numpy()[valid], stride, offset,
            mask[env].cpu().numpy(),
        )
        Image.fromarray(picture).save(out / f"env{env:04d}_qmap.png")
    return True


def _sac_table(settings, attempts: int, out: Path) -> None:
    """The shipped agent's result table on this machine: planner alone vs planner + SAC, with the planner the
    agent was trained to correct."""
    from dexrl.rl import SHIPPED_AGENT, shipped_agent_planner  # noqa: PLC0415

    if not SHIPPED_AGENT.is_file():
        print("[demo] no shipped SAC agent in this checkout: train one with `dexrl train` (docs/rl.md)")
        return
    from dexrl.rl.env import make_env, task_cfg  # noqa: PLC0415
    from dexrl.rl.evaluate import evaluate_arms, markdown_table, sac_policy, summarize, write_results, zero_policy  # noqa: PLC0415

    settings.num_envs = max(2, settings.num_envs)
    planner_name = shipped_agent_planner()
    env = make_env(task_cfg(settings, planner_name))
    try:
        arms = {"planner": zero_policy, "planner+sac": sac_policy(SHIPPED_AGENT, settings.device)}
        summary = summarize(evaluate_arms(env, arms, attempts, seed=settings.seed, progress=lambda _: None))
    finally:
        env.close()
    write_results(summary, out)
    print(f"[demo] the shipped SAC agent ({SHIPPED_AGENT.name}, corrects the {planner_name} planner), {attempts}+ attempts per arm:")
    print(markdown_table(summary))
    print("[demo] the full evaluation (>= 2000 attempts per arm, seen and novel sets): docs/rl.md")
