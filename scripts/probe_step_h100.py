"""Where a grasp attempt's time goes on a GPU: a plain step and its parts, a render, three timed batches, one
observe and one execute with every physics step timed, and a kernel profile of five steps (JSON and tables in
$OUT). Used for docs/executor_speed.md.

    PYTHONPATH=$SITE:. python3 scripts/probe_step_h100.py ENVS [key=value scene overrides ...]   (DEV=cpu on a CPU)
"""
import json
import os
import sys
import time

import torch
from dexrl.planning import make_planner
from dexrl.sim.grasp_runner import GraspRunner
from dexrl.sim.settings import load_scene_settings

envs = int(sys.argv[1]); overrides = sys.argv[2:]
DEV = os.environ.get("DEV", "cuda:0")
settings = load_scene_settings(overrides, num_envs=envs, device=DEV)
runner = GraspRunner(settings, make_planner("baseline"))
runner.attempt()
world, ex = runner.world, runner.executor
sync = torch.cuda.synchronize if DEV.startswith("cuda") else (lambda: None)
def timed(fn, n=30):
    sync(); t = time.perf_counter()
    for _ in range(n): fn()
    sync(); return round((time.perf_counter() - t) / n * 1000, 3)
res = {"envs": envs, "overrides": overrides}
res["world.step_ms"] = timed(world.step)
# Three timed batches as the bench does (render + plan + execute + judge).
sync(); t = time.perf_counter()
for _ in range(3):
    runner.attempt()
sync(); res["attempts_per_s"] = round(3 * envs / (time.perf_counter() - t), 1)
res["bench_outcomes"] = runner.tally.as_dict()
res["write_data_to_sim_ms"] = timed(world.scene.write_data_to_sim)
res["sim.step_ms"] = timed(lambda: world.sim.step(render=False))
res["scene.update_ms"] = timed(lambda: world.scene.update(world.dt))
res["render_depth_ms"] = timed(world.render_depth, 5)
# One attempt, with world.step counted and timed.
calls = {"n": 0, "t": 0.0}
orig = world.step
def counted(steps=1):
    sync(); t = time.perf_counter(); orig(steps); sync(); calls["t"] += time.perf_counter() - t; calls["n"] += steps
world.step = counted
newround = world.new_round
nr = {"t": 0.0}
def timed_round(*a, **k):
    sync(); t = time.perf_counter(); r = newround(*a, **k); sync(); nr["t"] += time.perf_counter() - t; return r
world.new_round = timed_round
sync(); t = time.perf_counter(); view = runner.observe(); sync(); res["observe_s"] = round(time.perf_counter() - t, 3)
sync(); t = time.perf_counter(); result = runner.execute(view.poses); sync(); res["execute_s"] = round(time.perf_counter() - t, 3)
res["outcomes"] = torch.bincount(result.outcome.cpu(), minlength=7).tolist()
res["execute_steps"] = calls["n"]; res["execute_step_s"] = round(calls["t"], 3); res["new_round_s"] = round(nr["t"], 3)
world.step = orig
# Kernel profile of 5 plain steps.
from torch.profiler import ProfilerActivity, profile
with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.startswith("cuda") else [])) as prof:
    for _ in range(5): world.step()
    sync()
table = prof.key_averages().table(sort_by="self_cuda_time_total" if DEV.startswith("cuda") else "self_cpu_time_total", row_limit=25)
out = os.environ.get("OUT", ".")
tag = "_".join([str(envs)] + [o.replace("=", "").replace(".", "") for o in overrides])
open(f"{out}/probe_{tag}.txt", "w").write(table)
cpu_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
open(f"{out}/probe_cpu_{tag}.txt", "w").write(cpu_table)
print(json.dumps(res))
json.dump(res, open(f"{out}/probe_{tag}.json", "w"))
