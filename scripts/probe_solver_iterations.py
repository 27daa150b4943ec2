"""How many iterations MuJoCo-Warp's constraint solver takes per physics step during grasp attempts, per world
and for the slowest world of each step (on a GPU every world runs until the slowest one has converged or hit
``physics.solver_iterations``). Runs lock-step batches with the baseline planner and reads each step's
``solver_niter`` (one device synchronisation per step, so the wall time is not a throughput figure).
Used for docs/executor_speed.md; prints one JSON object.

    PYTHONPATH=$SITE:. python3 scripts/probe_solver_iterations.py ENVS BATCHES [key=value scene overrides ...]
    (DEV=cpu on a CPU)
"""
import json
import os
import sys
import time

import numpy as np
from isaaclab_newton.physics import NewtonManager

from dexrl.planning import make_planner
from dexrl.sim.grasp_runner import GraspRunner
from dexrl.sim.settings import load_scene_settings

envs, batches, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
settings = load_scene_settings(overrides, num_envs=envs, device=os.environ.get("DEV", "cuda:0"))
runner = GraspRunner(settings, make_planner("baseline"))
world = runner.world
per_step: list[np.ndarray] = []  # (worlds,) iterations of each physics step
step_once = world.step


def step_and_record(steps: int = 1) -> None:
    for _ in range(steps):
        step_once(1)
        per_step.append(NewtonManager._solver.mjw_data.solver_niter.numpy().copy())


world.step = step_and_record
started = time.perf_counter()
for _ in range(batches):
    runner.attempt()
iterations = np.stack(per_step)
slowest = iterations.max(axis=1)
cap = settings.physics.solver_iterations
print(json.dumps({
    "envs": envs, "batches": batches, "overrides": overrides, "device": settings.device,
    "cap": cap, "ls_cap": settings.physics.ls_iterations, "steps": len(per_step),
    "wall_s": round(time.perf_counter() - started, 1),
    "per_world_mean": round(float(iterations.mean()), 2),
    "per_world_p99": int(np.percentile(iterations, 99)),
    "slowest_world_mean": round(float(slowest.mean()), 2),
    "slowest_world_p50_p90_max": [int(np.median(slowest)), int(np.percentile(slowest, 90)), int(slowest.max())],
    "steps_at_cap_percent": round(100 * float((slowest >= cap).mean()), 2),
    "lockstep_ratio": round(float(slowest.sum() / iterations.mean(axis=1).sum()), 2),
    "slowest_histogram": np.bincount(slowest).tolist(),
    "outcomes": runner.tally.as_dict(),
}))
