"""``dexrl bench grasp`` with the real kit-less engine (toy size): a profiled stream's phases add up to its time,
the figures say how busy the envs were, and a sustained stream times only attempts between its start-up and
its end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sim

REPO = Path(__file__).resolve().parents[1]


def test_a_profiled_stream_accounts_for_its_time_and_the_envs_busy_share_is_reported(tmp_path):
    figures_file = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "dexrl", "bench", "grasp", "--device", "cpu", "--envs", "2", "--batches", "1",
        "--stream", "--profile", "--seed", "5", "--json", str(figures_file), "objects.pool_size=4",
        "objects.count_range=[2,3]",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    figures = json.loads(figures_file.read_text())
    assert figures["schedule"] == "stream" and figures["attempts"] == 2
    assert sum(figures["outcomes"].values()) == 6  # a lock-step warm-up, the timed stream, the profiled stream
    assert figures["physics_steps"] > 0 and 0 < figures["env_busy_share"] <= 1
    profile = figures["profile"]
    phases = profile["phase_s_per_batch"]
    # The stream's own calls are charged: the state machine before each step, the judgements, the plans.
    assert {"executor", "physics.step", "plan", "render", "other"} <= set(phases)
    assert abs(sum(profile["phase_share"].values()) - 1) < 2e-3
    assert abs(sum(phases.values()) - profile["s_per_batch"]) < 1e-3 * len(phases)
    assert profile["physics_steps_per_batch"] > 0


def test_a_sustained_stream_times_attempts_after_its_start_up_and_before_its_end(tmp_path):
    figures_file = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "dexrl", "bench", "grasp", "--device", "cpu", "--envs", "2", "--batches", "2",
        "--sustained", "--seed", "5", "--json", str(figures_file),
        "objects.pool_size=4", "objects.count_range=[2,3]",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    figures = json.loads(figures_file.read_text())
    assert figures["schedule"] == "sustained"
    timed = figures["attempts"]
    assert timed >= 4 and sum(figures["timed_outcomes"].values()) == timed  # whole groups: at least 2 per env
    # Made in all: the lock-step warm-up (2), the stream's start-up before the window (at least 2), the timed
    # ones, and those still in flight when the window closed.
    assert sum(figures["outcomes"].values()) >= 2 + 2 + timed
    assert figures["attempts_per_s"] > 0 and 0 < figures["env_busy_share"] <= 1


def test_stream_and_sustained_are_one_or_the_other():
    command = [sys.executable, "-m", "dexrl", "bench", "grasp", "--device", "cpu", "--stream", "--sustained"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2 and "not allowed with argument" in completed.stderr
