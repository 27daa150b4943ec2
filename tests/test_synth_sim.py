"""``dexrl synth`` at toy size with the real kit-less engine: shards, labels, statistics and resume."""

import numpy as np
import pytest
import torch

from dexrl.gqcnn.dataset import read_manifest
from dexrl.grasp.baseline import HighestObjectPlanner
from dexrl.sim.grasp_runner import GraspRunner
from dexrl.sim.scene_cfg import SceneSettingsCfg
from dexrl.synth.candidates import CandidateMix, CandidateSampler
from dexrl.synth.synthesize import SynthConfig, synthesize

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    settings = SceneSettingsCfg(num_envs=2, device="cpu", seed=5)
    settings.objects.pool_size = 4
    settings.objects.count_range = (2, 3)
    return GraspRunner(settings, HighestObjectPlanner(), asset_dir=tmp_path_factory.mktemp("gripper"))


def test_synth_writes_labelled_shards_and_resumes(runner, tmp_path):
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator().manual_seed(0))
    stats = synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=4, shard_size=2, seed=1, progress=False))
    shards = read_manifest(tmp_path)
    assert [s.file for s in shards] == ["shard_00000.npz", "shard_00001.npz"] and stats.shards_written == 2
    assert stats.grasps == 4 == sum(stats.outcomes.values())
    assert len(stats.shard_seconds) == 2 and 0 < sum(stats.shard_seconds) <= stats.seconds
    for shard in shards:
        data = np.load(tmp_path / shard.file)
        assert data["crops"].shape == (2, 96, 96) and data["crops"].dtype == np.float32
        assert set(np.unique(data["labels"])) <= {0, 1} and shard.positives == int(data["labels"].sum())
        assert (data["depths"] > 0.3).all() and (np.abs(data["angles"]) <= np.pi / 2).all()
        assert shard.meta["outcomes"]["success"] == shard.positives
    again = synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=6, shard_size=2, seed=1, progress=False))
    assert again.shards_kept == 2 and again.shards_written == 1 and again.grasps == 2
    assert len(read_manifest(tmp_path)) == 3


def test_a_stream_judges_each_attempt_once_and_leaves_the_runner_ready_for_lock_step(runner):
    before = runner.tally.attempts
    judged = [(envs.tolist(), result) for envs, result, _ in runner.stream(5)]
    envs = [env for group, _ in judged for env in group]
    assert len(envs) == 5 and set(envs) == {0, 1}
    assert runner.tally.attempts == before + 5
    for group, result in judged:
        assert len(result.outcome) == len(group) == len(result.duration)
        assert ((result.outcome >= 0) & (result.duration >= 0)).all()
    assert not runner.world.pre_step_callbacks
    batch = runner.attempt()
    assert len(batch.result.outcome) == 2 and runner.tally.attempts == before + 7


def test_streamed_synthesis_writes_the_same_kind_of_shard(runner, tmp_path):
    sampler = CandidateSampler(CandidateMix(), runner.world.settings.camera.intrinsics, generator=torch.Generator().manual_seed(0))
    stats = synthesize(runner, sampler, SynthConfig(out=tmp_path, grasps=4, shard_size=4, seed=2, progress=False, stream=True))
    (shard,) = read_manifest(tmp_path)
    data = np.load(tmp_path / shard.file)
    assert stats.grasps == 4 == sum(stats.outcomes.values()) == len(data["labels"])
    assert data["crops"].shape == (4, 96, 96) and (data["depths"] > 0.3).all()
    assert shard.positives == int(data["labels"].sum()) == stats.outcomes["success"]
    assert sum(sum(counts.values()) for counts in stats.by_source.values()) == 4
