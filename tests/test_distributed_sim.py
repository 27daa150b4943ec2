"""``dexrl synth``, ``dexrl eval-planner`` and ``dexrl bench grasp`` under torchrun: two gloo processes on the
CPU with the real kit-less engine (toy sizes: 2 envs, one batch per rank); synthesis and evaluation against
single-process runs of each rank's share."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dexrl.distributed import Rank
from dexrl.gqcnn.dataset import MANIFEST, read_manifest
from dexrl.grasp.baseline import HighestObjectPlanner
from dexrl.sim.grasp_runner import GraspRunner, OutcomeTally
from dexrl.sim.settings import load_scene_settings
from dexrl.synth.candidates import CandidateMix, CandidateSampler
from dexrl.synth.evaluate import evaluate_planners
from dexrl.synth.synthesize import SynthConfig, synthesize

pytestmark = pytest.mark.sim

REPO = Path(__file__).resolve().parents[1]
SCENE = ["objects.pool_size=4", "objects.count_range=[2,3]"]
SEED = 5
"""Seeds the object pool of every world (the command's ``--seed``), the shards and the evaluation heaps."""


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """The world each torchrun rank builds from the same command-line settings."""
    settings = load_scene_settings(SCENE, num_envs=2, seed=SEED, device="cpu")
    return GraspRunner(settings, HighestObjectPlanner(), asset_dir=tmp_path_factory.mktemp("gripper"))


def torchrun(*args: str) -> None:
    """``torchrun --standalone --nproc_per_node=2 -m dexrl ARGS`` on the CPU (gloo)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dexrl", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]


def _shard_arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    arrays = {}
    for shard in read_manifest(folder):
        with np.load(folder / shard.file) as data:
            arrays[shard.file] = {name: data[name] for name in data.files}
    return arrays


def test_two_ranks_write_the_union_of_the_single_process_shares(runner, tmp_path):
    ranks, alone = tmp_path / "ranks", tmp_path / "alone"
    torchrun("synth", "--device", "cpu", "--envs", "2", "--seed", str(SEED), "--grasps", "4", "--shard-size", "2",
             "--mix", "uniform=0.5,edge=0.5", "--out", str(ranks), *SCENE)
    assert sorted(path.name for path in ranks.glob("manifest*.json")) == [MANIFEST]
    assert [shard.file for shard in read_manifest(ranks)] == ["shard_00000.npz", "shard_00001.npz"]
    stats = json.loads((ranks / "synth_stats.json").read_text())
    assert stats["ranks"] == 2 and stats["grasps"] == 4 and stats["shards_written"] == 2

    # Each rank's share as a single process, rank 1's first: a shard does not depend on what the world did before
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator())
    config = SynthConfig(out=alone, grasps=4, shard_size=2, seed=SEED, progress=False)
    for rank in (Rank(1, 2), Rank(0, 2)):
        synthesize(runner, sampler, config, rank=rank)
    assert [shard.file for shard in read_manifest(alone)] == ["shard_00000.npz", "shard_00001.npz"]
    expected, got = _shard_arrays(alone), _shard_arrays(ranks)
    for file, arrays in expected.items():
        for name, values in arrays.items():
            assert np.array_equal(values, got[file][name]), (file, name)

    # A rank resumes its share of a larger run: shard 0 is kept, shard 2 is new
    more = synthesize(runner, sampler, SynthConfig(out=ranks, grasps=6, shard_size=2, seed=SEED, progress=False), rank=Rank(0, 2))
    assert (more.shards_kept, more.shards_written, more.grasps) == (1, 1, 2)
    assert [shard.file for shard in read_manifest(ranks)] == [f"shard_{i:05d}.npz" for i in range(3)]


def test_distributed_evaluation_counts_equal_the_single_process_counts(runner, tmp_path):
    torchrun("eval-planner", "--device", "cpu", "--envs", "2", "--seed", str(SEED), "--planners", "baseline",
             "--attempts", "4", "--out", str(tmp_path), *SCENE)
    (score,) = json.loads((tmp_path / "eval_seen.json").read_text())["scores"]

    expected = OutcomeTally()
    for rank in (Rank(0, 2), Rank(1, 2)):
        (alone,) = evaluate_planners(runner, {"baseline": HighestObjectPlanner()}, 4, seed=SEED, progress=False, rank=rank)
        expected.counts += alone.tally.counts
    assert score["attempts"] == 4 == expected.attempts
    assert score["outcomes"] == expected.as_dict()
    assert score["ci95"] == pytest.approx(expected.score()["ci95"])


def test_bench_grasp_counts_every_ranks_attempts_on_heaps_of_its_own(tmp_path):
    figures_file = tmp_path / "bench.json"
    torchrun("bench", "grasp", "--device", "cpu", "--envs", "1", "--batches", "1", "--seed", str(SEED),
             "--json", str(figures_file), *SCENE)
    figures = json.loads(figures_file.read_text())
    assert (figures["ranks"], figures["num_envs"], figures["attempts"]) == (2, 2, 2)
    assert sum(figures["outcomes"].values()) == 4  # a warm-up and a timed attempt per env, on both ranks
    # every rank's attempts over the slowest rank's time; the rate is rounded to 2 decimals and the time to 3,
    # so the rate lies within the rounded time's interval, widened by its own rounding
    wall = figures["s_per_batch"]
    assert 2 / (wall + 0.0005) - 0.005 <= figures["attempts_per_s"] <= 2 / (wall - 0.0005) + 0.005
    assert figures["physics_steps"] > 0 and 0 < figures["env_busy_share"] <= 1
    first, second = figures["heap_seeds"]
    assert first == SEED and second != SEED
    assert figures["overrides"] == SCENE and figures["solver"]["solver"] == "newton"  # what the figures ran with
